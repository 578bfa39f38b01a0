"""Is the HC bias of large heads about their size in pixels, or about the image's scale?

HC18 heads of every gestation fill about the same number of pixels: a third-trimester
head is imaged with larger pixels (mm per pixel), not larger in the image. So a bias
that grows with HC in mm can come from the head's extent in the network input (what
the network sees) or from the scale (what it does not see: nothing in the network's
input tells it the mm per pixel). This script tells the two apart on held-out rows
(``cv_report.py``'s ``per_image.csv``):

- a table by reference-HC band: images, median HC in pixels, median pixel size, the mean
  DF and the mean relative DF (DF / reference HC), with 95 % bootstrap intervals over
  scan prefixes;
- a least-squares fit of the relative DF (%) on ln(HC in pixels) and ln(pixel size),
  both centred, with bootstrap intervals, over the heads of ``--fit-from`` mm and more
  (default 125: the second and third trimesters, leaving out the first trimester's
  failures, which are of another kind): which of the two the bias follows.

Usage::

    python benchmarks/bias_by_scale.py benchmarks/results/cv5/per_image.csv \
        --pixel-sizes ../shared/data/hc18/training_set_pixel_size_and_HC.csv --column level0.6_df_mm
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from cv_report import cluster_bootstrap, cluster_resamples, fmt, read_per_image_csv

#: Reference-HC bands (mm): the first trimester, the second in two, the third in three.
BANDS_MM = ((0.0, 125.0), (125.0, 175.0), (175.0, 225.0), (225.0, 260.0), (260.0, 290.0),
            (290.0, 1000.0))  # fmt: skip


def fit_scale_terms(
    rel_pct: np.ndarray, ln_hc_px: np.ndarray, ln_px: np.ndarray, groups: np.ndarray,
    n: int = 2000, seed: int = 0,
) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """Slopes of ``rel_pct`` on centred ln(HC px) and ln(pixel size), with 95 % intervals.

    The intervals resample ``groups`` (scan prefixes) with replacement
    (:func:`cv_report.cluster_resamples`, as :func:`cv_report.cluster_bootstrap` does).
    """
    x = np.column_stack([np.ones_like(rel_pct), ln_hc_px - ln_hc_px.mean(), ln_px - ln_px.mean()])

    def slopes(idx: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(x[idx], rel_pct[idx], rcond=None)[0][1:]

    point = slopes(np.arange(len(rel_pct)))
    draws = np.array([slopes(idx) for idx in cluster_resamples(groups, n, seed)])
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    names = ("ln_hc_px", "ln_pixel_size")
    return {k: (float(point[i]), float(lo[i]), float(hi[i])) for i, k in enumerate(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("per_image", type=Path)
    ap.add_argument("--pixel-sizes", required=True, type=Path, help="HC18 CSV of pixel sizes")
    ap.add_argument("--column", default="plain_df_mm", help="the DF column to judge")
    ap.add_argument("--folds", type=int, nargs="+", help="only the rows of these folds")
    ap.add_argument("--fit-from", type=float, default=125.0, help="reference HC (mm) to fit from")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args()
    with open(args.pixel_sizes, newline="") as fh:
        px_of = {r["filename"]: float(r["pixel size(mm)"]) for r in csv.DictReader(fh)}
    rows = [r for r in read_per_image_csv(args.per_image)[0] if np.isfinite(r[args.column])]
    if args.folds:
        rows = [r for r in rows if r["fold"] in args.folds]
    ref = np.array([r["hc_ref_mm"] for r in rows])
    df = np.array([r[args.column] for r in rows])
    px = np.array([px_of[r["filename"]] for r in rows])
    groups = np.array([r["prefix"] for r in rows])
    hc_px, rel_pct = ref / px, 100.0 * df / ref
    print(f"# bias_by_scale: {len(rows)} images of {args.per_image}, {args.column}\n")
    print("| reference HC (mm) | images | HC (pixels), median | pixel size (mm), median | "
          "DF (mm) | DF / HC (%) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    report: dict = {"n": len(rows), "column": args.column, "bands": []}
    for lo, hi in BANDS_MM:
        s = (ref >= lo) & (ref < hi)
        if not s.any():
            continue
        band = {
            "hc_mm": [lo, hi],
            "n": int(s.sum()),
            "hc_px_median": float(np.median(hc_px[s])),
            "pixel_size_median_mm": float(np.median(px[s])),
            "df_mm": cluster_bootstrap(df[s], groups[s]),
            "rel_df_pct": cluster_bootstrap(rel_pct[s], groups[s]),
        }
        report["bands"].append(band)
        name = f"{lo:.0f}-{hi:.0f}" if hi < 1000 else f"{lo:.0f}+"
        print(
            f"| {name} | {band['n']} | {band['hc_px_median']:.0f} | "
            f"{band['pixel_size_median_mm']:.3f} | {fmt(band['df_mm'], sign=True)} | "
            f"{fmt(band['rel_df_pct'], sign=True)} |"
        )
    f = ref >= args.fit_from
    slopes = fit_scale_terms(rel_pct[f], np.log(hc_px[f]), np.log(px[f]), groups[f])
    report["fit"] = {"from_hc_mm": args.fit_from, "n": int(f.sum()), "slopes": slopes}
    print(
        f"\nDF / HC (%) fitted on both, {int(f.sum())} heads of {args.fit_from:g} mm and more, "
        "per unit of the log: ln(HC in pixels) "
        f"{fmt(slopes['ln_hc_px'], sign=True)}, ln(pixel size) "
        f"{fmt(slopes['ln_pixel_size'], sign=True)}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
