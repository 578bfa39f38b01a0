"""The ellipse fit's two knobs, paired against the defaults on held-out maps of a CV run.

``fetalhead.postprocess.postprocess`` weights each boundary point by ``|grad p|`` to the
power ``weight_power`` (2) and refits with Tukey's biweight cut at ``cutoff`` (4.685)
robust standard deviations (:func:`fetalhead.geometry.ellipse.fit_ellipse`). Each
variant changes one of them; every held-out image is measured as ``fetalhead predict``
does (levels by HC band, ``--levels``), and the ADF change against the defaults is given
with a 95 % bootstrap interval over scan prefixes, and per trimester.

    python benchmarks/fit_variants.py ../shared/data/hc18/training_set --run runs/cv5_s2
"""

from __future__ import annotations

import math

import numpy as np
from cv_report import (
    TRIMESTERS,
    case_row,
    cluster_bootstrap,
    fmt,
    held_out_maps,
    parse_run_arguments,
)

from fetalhead.geometry.letterbox import Letterbox
from fetalhead.predict import fit_by_band

#: Variant name -> (weight_power, biweight cut-off); the first is the default.
VARIANTS = {
    "default (2, 4.685)": (2.0, 4.685),
    "weight power 1": (1.0, 4.685),
    "weight power 1.5": (1.5, 4.685),
    "weight power 3": (3.0, 4.685),
    "cut-off 2": (2.0, 2.0),
    "cut-off 2.5": (2.0, 2.5),
    "cut-off 3.5": (2.0, 3.5),
    "cut-off 7": (2.0, 7.0),
}


def measure(prob: np.ndarray, lb: Letterbox, levels: dict, px: float, power: float, cut: float):
    """The ellipse ``predict`` would fit (levels by band), with the fit's two knobs set."""
    return fit_by_band(
        prob, lb, "full", levels, levels["second"], px, weight_power=power, cutoff=cut
    )[0]


def main() -> None:
    args, levels = parse_run_arguments(__doc__.splitlines()[0])
    rows = []
    for fold, case, prob, lb in held_out_maps(args.data, args.run):
        row = case_row(case, fold)
        for variant, (power, cut) in VARIANTS.items():
            e = measure(prob, lb, levels, case.pixel_size_mm, power, cut)
            row[variant] = e.perimeter * case.pixel_size_mm - case.hc_mm if e else math.nan
        rows.append(row)
    print(f"# Fit variants: {len(rows)} held-out images of {args.run}, levels {args.levels}\n")
    print("| variant | ADF (mm) | paired change (mm) | " + " | ".join(TRIMESTERS) + " |")
    print("|---|---|---|" + "---|" * len(TRIMESTERS))
    base = next(iter(VARIANTS))
    prefixes = np.array([r["prefix"] for r in rows])
    tri = np.array([r["trimester"] for r in rows])
    ref = np.abs([r[base] for r in rows])
    for variant in VARIANTS:
        adf = np.abs([r[variant] for r in rows])
        change = adf - ref
        per = [f"{np.nanmean(change[tri == t]):+.2f}" for t in TRIMESTERS]
        print(
            f"| {variant} | {np.nanmean(adf):.2f} | "
            f"{fmt(cluster_bootstrap(change, prefixes), sign=True)} | " + " | ".join(per) + " |"
        )


if __name__ == "__main__":
    main()
