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
from cv_report import TRIMESTERS, cluster_bootstrap, fmt, metric_summary

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


def summarise(cols: dict[str, np.ndarray]) -> dict:
    """Each side's :func:`cv_report.metric_summary`, and the paired differences B - A."""
    g, tri = cols["prefix"], cols["trimester"]
    res: dict = {
        side: metric_summary(
            cols[f"{side}_dsc"], cols[f"{side}_hd_mm"], cols[f"{side}_df_mm"], g, tri
        )
        for side in ("a", "b")
    }
    diff = {k: cols[f"b_{k}"] - cols[f"a_{k}"] for k in ("dsc", "hd_mm", "adf_mm", "df_mm")}
    res["b_minus_a"] = {k: cluster_bootstrap(d, g) for k, d in diff.items()}
    res["b_minus_a_adf_by_trimester"] = {
        t: cluster_bootstrap(diff["adf_mm"][tri == t], g[tri == t]) for t in TRIMESTERS
    }
    return res


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
    res = {"n": n, "names": [na, nb], **summarise(cols)}
    for key, label, scale in (*METRICS, ("df_mm", "DF mm", 1.0)):
        sign = key == "df_mm"
        print(
            f"| {label} | {fmt(res['a'][key], scale, sign)} | {fmt(res['b'][key], scale, sign)} |"
            f" {fmt(res['b_minus_a'][key], scale, sign=True)} |"
        )
    print(f"\n| trimester | n | ADF {na} | ADF {nb} | ADF {nb} - {na} | DF {na} | DF {nb} |")
    print("|---|---|---|---|---|---|---|")
    for t in TRIMESTERS:
        a_t, b_t = res["a"]["by_trimester"][t], res["b"]["by_trimester"][t]
        print(
            f"| {t} | {a_t['n']} | {fmt(a_t['adf_mm'])} | {fmt(b_t['adf_mm'])} | "
            f"{fmt(res['b_minus_a_adf_by_trimester'][t], sign=True)} | "
            f"{fmt(a_t['df_mm'], sign=True)} | {fmt(b_t['df_mm'], sign=True)} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
