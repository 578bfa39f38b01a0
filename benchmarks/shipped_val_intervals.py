"""Coverage of the shipped HC intervals, and the qc flag, on the weights' own validation split.

The intervals are calibrated on the cross-validation folds' held-out maps, made by
fold models (``scripts/calibrate_weights.py``). This checks how they carry over to
the shipped model, on its 128 validation images (which it was never trained on),
at each calibrated level; and how many images ``uncertain_hc`` flags, and how many
of the large errors (|HC error| > 5 mm) it catches.

Usage::

    python benchmarks/shipped_val_intervals.py ../shared/data/hc18/training_set
"""

from __future__ import annotations

import argparse

import numpy as np

from fetalhead.data import find_cases
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.uncertainty import LEVELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights with a validation split")
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    args = ap.parse_args()
    if 0.9 not in args.levels:
        ap.error("--levels must include 0.9, the level the flag is reported at")
    measurers = {
        lv: HeadMeasurer.from_pretrained(args.weights, backend="torch", interval_level=lv)
        for lv in args.levels
    }
    val = set(measurers[0.9].checkpoint.meta["split"].get("val_files") or [])
    if not val:
        ap.error(f"{args.weights} records no validation files (trained on every image)")
    cases = [c for c in find_cases(args.data) if c.image.name in val]
    tri = [trimester(hadlock_1984(c.hc_mm).weeks) for c in cases]
    print(f"# {args.weights}, {len(cases)} validation images, torch float32, their TTA setting")
    print("| level | trimester | n | coverage | median width mm |")
    print("|---|---|---|---|---|")
    flagged, big = [], []
    for lv, m in measurers.items():
        cov, width = [], []
        for c in cases:
            r = m.measure(read_gray(c.image), c.pixel_size_mm, filename=c.image.name)
            cov.append(r.hc_low_mm <= c.hc_mm <= r.hc_high_mm)
            width.append(r.hc_high_mm - r.hc_low_mm)
            if lv == 0.9:
                flagged.append("uncertain_hc" in r.qc)
                big.append(abs(r.hc_mm - c.hc_mm) > 5.0)
        cov_a, width_a, tri_a = np.array(cov), np.array(width), np.array(tri)
        for t in ("first", "second", "third", "all"):
            sel = np.ones(len(cases), bool) if t == "all" else tri_a == t
            print(f"| {lv:.0%} | {t} | {sel.sum()} | {cov_a[sel].mean():.1%} | "
                  f"{np.median(width_a[sel]):.2f} |")  # fmt: skip
    f, b = np.array(flagged), np.array(big)
    print(f"\nuncertain_hc: {f.mean():.1%} flagged; {int((f & b).sum())} of {int(b.sum())} "
          "large errors (> 5 mm) caught")  # fmt: skip


if __name__ == "__main__":
    main()
