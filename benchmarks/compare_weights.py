"""Two sets of weights on the same labelled images, paired image by image.

Takes the ``metrics.csv`` that ``fetalhead evaluate`` wrote for each set of weights on
the same images (for example both ``--split val`` of weights trained on the same prefix
split) and prints, side by side, DSC, HD, ADF and DF of each and the paired difference
(B - A), with 95 % bootstrap intervals over scan prefixes, overall and by trimester.
An image without a head in either run is left out of the pairs and counted.

Usage::

    fetalhead evaluate ../shared/data/hc18/training_set --weights A.pt --out runs/eval_a --split val
    fetalhead evaluate ../shared/data/hc18/training_set --weights B.pt --out runs/eval_b --split val
    python benchmarks/compare_weights.py runs/eval_a/metrics.csv runs/eval_b/metrics.csv \
        --names old new --out benchmarks/results/weights/report.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from cv_report import TRIMESTERS, cluster_bootstrap, fmt

from fetalhead.data import scan_prefix

METRICS = (("dsc", "DSC %", 100.0), ("hd_mm", "HD mm", 1.0), ("adf_mm", "ADF mm", 1.0))


def read_metrics(path: Path) -> dict[str, dict[str, str]]:
    """``fetalhead evaluate``'s per-image rows by file name."""
    with open(path, newline="") as fh:
        return {r["filename"]: r for r in csv.DictReader(fh)}


def paired(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> dict[str, np.ndarray]:
    """Columns of the images both runs measured (a head found in each)."""
    names = sorted(n for n in a.keys() & b.keys() if a[n]["df_mm"] and b[n]["df_mm"])
    cols: dict[str, np.ndarray] = {
        "prefix": np.array([scan_prefix(n) for n in names]),
        "trimester": np.array([a[n]["trimester"] for n in names]),
    }
    for side, rows in (("a", a), ("b", b)):
        for key in ("dsc", "hd_mm", "adf_mm", "df_mm"):
            cols[f"{side}_{key}"] = np.array([float(rows[n][key]) for n in names])
    return cols


def summarise(cols: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, list[float]]:
    g = cols["prefix"][sel]
    out = {}
    for key in ("dsc", "hd_mm", "adf_mm", "df_mm"):
        a, b = cols[f"a_{key}"][sel], cols[f"b_{key}"][sel]
        out[f"a_{key}"] = list(cluster_bootstrap(a, g))
        out[f"b_{key}"] = list(cluster_bootstrap(b, g))
        out[f"b_minus_a_{key}"] = list(cluster_bootstrap(b - a, g))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="metrics.csv of the first weights")
    ap.add_argument("b", type=Path, help="metrics.csv of the second weights")
    ap.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"))
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here too")
    args = ap.parse_args()
    a, b = read_metrics(args.a), read_metrics(args.b)
    if a.keys() != b.keys():
        ap.error(f"{args.a} and {args.b} score different images: evaluate both on the same set")
    cols = paired(a, b)
    na, nb = args.names
    n = len(cols["prefix"])
    print(f"{n} images measured by both (paired); {len(a) - n} left out (no head in one)\n")
    print(f"| metric | {na} | {nb} | {nb} - {na} |")
    print("|---|---|---|---|")
    everything = np.ones(n, bool)
    res = {"n": n, "names": [na, nb], "all": summarise(cols, everything)}
    for key, label, scale in (*METRICS, ("df_mm", "DF mm", 1.0)):
        s = res["all"]
        sign = key == "df_mm"
        print(
            f"| {label} | {fmt(s[f'a_{key}'], scale, sign)} | {fmt(s[f'b_{key}'], scale, sign)} |"
            f" {fmt(s[f'b_minus_a_{key}'], scale, sign=True)} |"
        )
    print(f"\n| trimester | n | ADF {na} | ADF {nb} | ADF {nb} - {na} | DF {na} | DF {nb} |")
    print("|---|---|---|---|---|---|---|")
    for t in TRIMESTERS:
        sel = cols["trimester"] == t
        s = res[t] = {"n": int(sel.sum()), **summarise(cols, sel)}
        print(
            f"| {t} | {s['n']} | {fmt(s['a_adf_mm'])} | {fmt(s['b_adf_mm'])} | "
            f"{fmt(s['b_minus_a_adf_mm'], sign=True)} | {fmt(s['a_df_mm'], sign=True)} | "
            f"{fmt(s['b_df_mm'], sign=True)} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
