"""Would a learned difficulty scale make the HC intervals narrower? Judged fold by fold.

The residual scale (``fetalhead.uncertainty.fit_interval(scale="residual")``) widens
each image's relative half-width by ``u = 1 + b_fit * max(0, ln(r / r0)) + b_border *
border``: the ellipse-fit residual and whether the head is clipped. The learned scale
(``scale="learned"``) takes ``u = exp(w . x)``, the expected relative error given the
qc flag's inputs (:data:`fetalhead.uncertainty.FLAG_INPUTS`: head size, fit residual,
clipping, map confidence and the map's profile across the boundary), fitted by a
ridge log-link regression. Both then take the split-conformal quantile of ``|error| /
(HC * u)`` in each HC band (Mondrian), so both are calibrated; only the widths differ.

Judged two ways:

1. on the rows of ``PER_IMAGE`` (``cv_report.py``'s ``per_image.csv``), each fold
   calibrated on the other folds (coverage and median width by trimester);
2. with ``--transfer OTHER.csv``, the held-out rows of another training recipe (its
   maps sharper or blurrier than the calibration folds'): calibrated on the folds of
   ``PER_IMAGE`` that ``OTHER.csv`` does not hold, and judged on ``OTHER.csv``: does a
   calibration carry from one recipe's fold models to another's?

Usage::

    python benchmarks/interval_scale.py benchmarks/results/shipped_cv5/per_image.csv
    python benchmarks/interval_scale.py benchmarks/results/cv5/per_image.csv \
        --transfer benchmarks/results/recipes_fold2/shipped_recipe_per_image.csv
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cv_report import TRIMESTERS, read_per_image_csv

from fetalhead.uncertainty import IntervalScale, fit_interval

LEVELS = (0.8, 0.9, 0.95)
Interval = Callable[[dict[str, Any]], tuple[float, float]]


def usable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a measured HC and every feature both scales read."""
    return [
        r
        for r in rows
        if math.isfinite(r.get("plain_hc_mm", math.nan)) and "rel_rms" in r and "blur" in r
    ]


def calibrate(cal: list[dict[str, Any]], level: float, scale: IntervalScale) -> Interval:
    """The interval with difficulty scale ``scale``, calibrated on ``cal``."""
    model = fit_interval(cal, level, scale)
    return lambda r: model.interval(r["plain_hc_mm"], r)


#: Report label -> scale (``learned`` is shipped since 2026-12-02).
SCALES: dict[str, IntervalScale] = {
    "residual (fit residual, clipping)": "residual",
    "learned (the flag's inputs)": "learned",
}


def judge(pairs: list[tuple[dict[str, Any], tuple[float, float]]]) -> dict[str, Any]:
    """Coverage and median width, overall and by trimester."""
    hit = np.array([lo <= r["hc_ref_mm"] <= hi for r, (lo, hi) in pairs])
    width = np.array([hi - lo for _, (lo, hi) in pairs])
    tri = np.array([r["trimester"] for r, _ in pairs])

    def summary(sel: np.ndarray) -> dict[str, Any]:
        n, coverage, width_mm = int(sel.sum()), hit[sel].mean(), np.median(width[sel])
        return {"n": n, "coverage": float(coverage), "median_width_mm": float(width_mm)}

    by_trimester = {t: summary(tri == t) for t in TRIMESTERS if (tri == t).any()}
    return {"all": summary(np.ones(len(hit), bool))} | by_trimester


def table(title: str, results: dict[str, dict[float, dict]]) -> str:
    first = results[next(iter(results))][LEVELS[0]]
    head = " | ".join(f"{t} ({first[t]['n'] if t in first else 0})"
                      for t in (*TRIMESTERS, "all"))  # fmt: skip
    lines = [f"### {title}", "", "coverage / median width (mm)", "",
             f"| scale | level | {head} |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, by_level in results.items():
        for level, res in by_level.items():
            cells = " | ".join(
                f"{res[t]['coverage']:.1%} / {res[t]['median_width_mm']:.1f}" if t in res else "-"
                for t in (*TRIMESTERS, "all")
            )
            lines.append(f"| {name} | {level:.0%} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("per_image", type=Path)
    ap.add_argument("--transfer", type=Path, help="another recipe's held-out rows to judge on")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args()
    rows, _ = read_per_image_csv(args.per_image)
    rows = usable(rows)
    folds = sorted({r["fold"] for r in rows})
    cross: dict[str, dict[float, dict]] = {}
    for name, scale in SCALES.items():
        cross[name] = {}
        for level in LEVELS:
            pairs = []
            for k in folds:
                interval = calibrate([r for r in rows if r["fold"] != k], level, scale)
                pairs += [(r, interval(r)) for r in rows if r["fold"] == k]
            cross[name][level] = judge(pairs)
    text = [table(f"{args.per_image}: each fold calibrated on the other folds", cross)]
    result: dict[str, Any] = {"cross_fold": cross}
    if args.transfer:
        other, _ = read_per_image_csv(args.transfer)
        other = usable(other)
        held = {r["fold"] for r in other}
        cal = [r for r in rows if r["fold"] not in held]
        moved: dict[str, dict[float, dict]] = {}
        for name, scale in SCALES.items():
            moved[name] = {}
            for level in LEVELS:
                interval = calibrate(cal, level, scale)
                moved[name][level] = judge([(r, interval(r)) for r in other])
        text.append(
            table(
                f"{args.transfer}: calibrated on folds {sorted({r['fold'] for r in cal})} "
                f"of {args.per_image.name}",
                moved,
            )
        )
        result["transfer"] = moved
    print("\n\n".join(text))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
