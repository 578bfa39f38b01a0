"""Which axis of the head's ellipse carries the HC error? Held-out images of a CV run.

For each image that a fold of a ``scripts/cross_validate.py`` run held out, the map is
measured as ``fetalhead predict`` does (:func:`fetalhead.predict.fit_by_band`, the
boundary level of each HC band from ``--levels``, by default the shipped 0.55 / 0.55 /
0.6), and its ellipse is compared with the reference axis by axis: the error of the
semi-major axis (half the OFD) and of the semi-minor axis (half the BPD), in mm. The HC
error is then split by recomputing HC with one axis predicted and the other taken from
the reference (Ramanujan's perimeter): ``ADF, major only`` is what the HC error would
be if only the semi-major axis were wrong, ``ADF, minor only`` if only the semi-minor
one were. Means per trimester (of the reference HC's Hadlock GA), with 95 % bootstrap
intervals over scan prefixes. HC18 images (van den Heuvel et al. 2018, CC BY 4.0).

    python benchmarks/axis_errors.py ../shared/data/hc18/training_set --run runs/cv5_s2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cv_report import (
    TRIMESTERS,
    case_row,
    cluster_bootstrap,
    fmt,
    held_out_fits,
    parse_run_arguments,
)

from fetalhead.data import label_ellipse
from fetalhead.geometry.ellipse import Ellipse, ramanujan_perimeter

COLUMNS = {
    "major_mm": "semi-major error (mm)",
    "abs_major_mm": "\\|semi-major error\\| (mm)",
    "abs_minor_mm": "\\|semi-minor error\\| (mm)",
    "adf_mm": "ADF (mm)",
    "adf_major_only_mm": "ADF, major only (mm)",
    "adf_minor_only_mm": "ADF, minor only (mm)",
}


def axis_row(e: Ellipse, ref: Ellipse, pixel_mm: float) -> dict[str, float]:
    """Axis errors of ``e`` against ``ref`` and the HC error each axis alone would make, in mm."""
    major, minor = max(e.a, e.b), min(e.a, e.b)
    ref_major, ref_minor = max(ref.a, ref.b), min(ref.a, ref.b)
    hc_ref = ramanujan_perimeter(ref_major, ref_minor)
    return {
        "major_mm": (major - ref_major) * pixel_mm,
        "abs_major_mm": abs(major - ref_major) * pixel_mm,
        "abs_minor_mm": abs(minor - ref_minor) * pixel_mm,
        "adf_mm": abs(ramanujan_perimeter(major, minor) - hc_ref) * pixel_mm,
        "adf_major_only_mm": abs(ramanujan_perimeter(major, ref_minor) - hc_ref) * pixel_mm,
        "adf_minor_only_mm": abs(ramanujan_perimeter(ref_major, minor) - hc_ref) * pixel_mm,
    }


def held_out_rows(data: str, run: Path, levels: dict[str, float]) -> list[dict]:
    """One row per held-out image of ``run`` with a head found: its case columns and axes."""
    return [
        case_row(case, fold) | axis_row(e, label_ellipse(case), case.pixel_size_mm)
        for fold, case, e, _ in held_out_fits(data, run, levels)
    ]


def table(rows: list[dict]) -> str:
    """Means and intervals of :data:`COLUMNS`, per trimester and over all rows."""
    lines = [
        "| trimester | images | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for group in (*TRIMESTERS, "all"):
        sel = [r for r in rows if group in ("all", r["trimester"])]
        if not sel:
            continue
        prefixes = np.array([r["prefix"] for r in sel])
        cells = [
            fmt(cluster_bootstrap(np.array([r[k] for r in sel]), prefixes), sign=k == "major_mm")
            for k in COLUMNS
        ]
        lines.append(f"| {group} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args, levels = parse_run_arguments(__doc__.splitlines()[0])
    rows = held_out_rows(args.data, args.run, levels)
    folds = sorted({r["fold"] for r in rows})
    print(
        f"# Axis errors: {len(rows)} held-out images of {args.run} (folds {folds}), levels by "
        f"HC band {args.levels[0]:g} / {args.levels[1]:g} / {args.levels[2]:g}; 95 % bootstrap "
        "intervals over scan prefixes\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
