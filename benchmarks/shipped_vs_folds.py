"""The shipped weights against the cross-validation recipe, on the same held-out images.

Each of the shipped weights' validation images is held out by exactly one fold model
of ``scripts/cross_validate.py``. This pairs the shipped weights' errors there
(``fetalhead evaluate --split val``, ``metrics.csv``) with the fold models' errors on
the same images (``benchmarks/cv_report.py``, ``per_image.csv``): mean ADF of each and
the paired difference, with 95 % bootstrap intervals over scan prefixes, and by
trimester. The validation images chose the shipped weights' best epoch, which
flatters them a little.

Usage::

    fetalhead evaluate ../shared/data/hc18/training_set --out runs/eval_val_l06 --split val
    python benchmarks/shipped_vs_folds.py runs/eval_val_l06/metrics.csv \
        benchmarks/results/cv5/per_image.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from cv_report import TRIMESTERS, cluster_bootstrap, fmt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shipped", type=Path, help="metrics.csv of fetalhead evaluate --split val")
    ap.add_argument("folds", type=Path, help="per_image.csv of benchmarks/cv_report.py")
    args = ap.parse_args()
    with open(args.folds, newline="") as fh:
        fold = {r["filename"]: r for r in csv.DictReader(fh)}
    rows = []
    with open(args.shipped, newline="") as fh:
        for r in csv.DictReader(fh):
            f = fold.get(r["filename"])
            if f is None or not r["adf_mm"] or not f["plain_df_mm"]:
                continue
            cv = abs(float(f["plain_df_mm"]))
            if math.isfinite(cv):
                rows.append((f["prefix"], f["trimester"], float(r["adf_mm"]), cv))
    g = np.array([r[0] for r in rows])
    tri = np.array([r[1] for r in rows])
    shipped = np.array([r[2] for r in rows])
    cv = np.array([r[3] for r in rows])
    print(f"{len(rows)} images measured by both (paired)\n")
    print("| images | n | shipped ADF mm | fold models ADF mm | shipped - folds mm |")
    print("|---|---|---|---|---|")
    for t in ("all", *TRIMESTERS):
        sel = np.ones(len(rows), bool) if t == "all" else tri == t
        print(
            f"| {t} | {sel.sum()} | {fmt(cluster_bootstrap(shipped[sel], g[sel]))} | "
            f"{fmt(cluster_bootstrap(cv[sel], g[sel]))} | "
            f"{fmt(cluster_bootstrap(shipped[sel] - cv[sel], g[sel]), sign=True)} |"
        )


if __name__ == "__main__":
    main()
