"""Attach the cross-validated calibration and evidence to the shipped weights.

Reads the per-image held-out rows of the cross-validation folds, either as
``benchmarks/cv_report.py`` cached them in each fold's run folder
(``RUNS/foldK/heldout_rows_levelP.json``) or from the ``per_image.csv`` it writes
(committed as ``benchmarks/results/shipped_cv5/per_image.csv`` for the shipped recipe,
so that the calibration can be redone without the runs; its rows are at the boundary
level the report was made at, P = 0.6 for the committed ones), and its ``report.json``,
then stores in the checkpoint's ``meta``:

- ``calibration.hc_interval``: split-conformal HC intervals at 80, 90 and 95 %,
  calibrated on every held-out image of the folds, with the learned difficulty scale
  (``--interval-scale learned``, the default) or the residual one;
- ``calibration.qc_flag``: the ``uncertain_hc`` flag, a logistic regression of
  "|HC error| > 5 mm" on the difficulty scores, fitted to those images
  (:class:`fetalhead.uncertainty.FlagModel`). Its threshold is then set on these
  weights' own scores: the fold models' maps are blurrier than the shipped
  model's, so a threshold cut on their scores flags far fewer of its images. With
  ``--threshold-images`` it is the 90th percentile of the shipped model's scores
  on those images (no labels are read), so that about 10 % of such images are
  flagged; without it, the 90th percentile of the folds' scores;
- ``cross_validation``: the folds' accuracy and the paired TTA difference, which
  decide ``inference.tta`` (on only if TTA lowered ADF by at least 0.1 mm); with
  ``--recipes``, also the training recipes compared pair by pair on the same folds;
- with ``--evidence KEY=JSON`` (repeatable), other benchmarks' results as
  ``cross_validation[KEY]``;
- with ``--level-by-band``, ``inference.level_by_band``: the boundary level of each HC
  band that ``benchmarks/level_by_band.py`` chose on the folds, and its nested
  cross-validation as ``cross_validation.level_by_band``;
- with ``--shape-prior``, ``inference.shape_prior``: the axis ratio and blend weight of
  each HC band that ``benchmarks/aspect_prior.py`` chose on the folds
  (:func:`fetalhead.geometry.ellipse.blend_long_axis`), and its fold-by-fold evidence as
  ``cross_validation.shape_prior``. The interval and the flag read the fit before the
  prior; with ``--flag-errors CSV:COLUMN`` (``hc_prior_mm`` of the ``per_image.csv``
  beside that report) the flag is fitted to the errors of the HC with the prior, the one
  ``predict`` reports.

The network's weights are not changed.

Usage::

    python scripts/calibrate_weights.py runs/cv5_s2 benchmarks/results/shipped_cv5/report.json
    python scripts/calibrate_weights.py benchmarks/results/shipped_cv5/per_image.csv \
        benchmarks/results/shipped_cv5/report.json \
        --level-by-band benchmarks/results/shipped_cv5/analysis/level_by_band.json \
        --threshold-images ../shared/data/hc18/test_set \
        --threshold-pixel-size-csv ../shared/data/hc18/test_set_pixel_size.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fetalhead.evaluate import weights_evaluation
from fetalhead.model import Checkpoint
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers.tables import read_pixel_size_csv
from fetalhead.uncertainty import LEVELS, IntervalScale, band_of, fit_flag, fit_interval

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from cv_report import read_column, read_per_image_csv

#: TTA is recommended only if cross-validation shows at least this much less ADF (mm).
TTA_MIN_GAIN_MM = 0.1
#: Share of images the qc flag is set to flag.
FLAG_SHARE = 0.1
#: What the committed folds were trained with (``--recipe``'s default).
SHIPPED_RECIPE = (
    "configs/cv5_shipped_stage1.yaml, then configs/cv5_shipped_stage2.yaml from each "
    "fold's last stage-1 weights"
)


def shipped_scores(ck: Checkpoint, folder: Path, pixel_csv: Path) -> list[float]:
    """The weights' flag scores on the images of ``folder`` (no labels read)."""
    table = read_pixel_size_csv(pixel_csv)
    measurer = HeadMeasurer(ck, backend="torch", tta=False)
    scores = []
    for name, px in sorted(table.pixel_size_mm.items()):
        m = measurer.measure(folder / name, px)
        if m.flag_score is not None:
            scores.append(m.flag_score)
    return scores


def read_heldout_rows(
    source: Path, boundary_level: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """The held-out rows and fold names, from a runs folder or a ``per_image.csv``."""
    if source.suffix == ".csv":
        return read_per_image_csv(source)
    rows, folds = [], []
    for f in sorted(source.glob(f"fold*/heldout_rows_level{boundary_level:g}.json")):
        rows += json.loads(f.read_text())
        folds.append(f.parent.name)
    return rows, folds


def store_choice(meta: dict, name: str, report: Path | None, key: str, script: str) -> None:
    """Store a default chosen on the folds, and its evidence.

    ``report[key]`` (the JSON of ``benchmarks/<script>``) becomes ``inference[name]``
    and the whole report ``cross_validation[name]``; without a report, any earlier
    choice is dropped.
    """
    meta["inference"].pop(name, None)
    if report is not None:
        chosen = json.loads(report.read_text())
        meta["inference"][name] = chosen[key]
        meta["cross_validation"][name] = {"source": f"benchmarks/{script} ({report})", **chosen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "heldout",
        type=Path,
        help="the cross-validation runs folder, or cv_report.py's per_image.csv",
    )
    ap.add_argument("report", type=Path)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument(
        "--boundary-level",
        type=float,
        default=0.6,
        help="iso-probability of the head boundary the rows were measured at; stored as "
        "the weights' inference level",
    )
    ap.add_argument(
        "--threshold-images",
        type=Path,
        help="unlabelled images on whose scores the flag's threshold is set",
    )
    ap.add_argument("--threshold-pixel-size-csv", type=Path)
    ap.add_argument(
        "--recipes",
        type=Path,
        help="benchmarks/compare_recipes.py's report.json: the training recipes compared on "
        "the same folds, stored as cross_validation.recipes",
    )
    ap.add_argument(
        "--level-by-band",
        type=Path,
        help="benchmarks/level_by_band.py's report JSON: store its levels per HC band as "
        "inference.level_by_band, with its nested cross-validation",
    )
    ap.add_argument(
        "--shape-prior",
        type=Path,
        help="benchmarks/aspect_prior.py's report JSON: store its ratio and weight per HC "
        "band as inference.shape_prior, with its fold-by-fold evidence",
    )
    ap.add_argument(
        "--flag-errors",
        metavar="CSV:COLUMN",
        help="fit the qc flag to the errors of this HC of per-image rows (by filename), for "
        "example hc_prior_mm of benchmarks/aspect_prior.py's per_image.csv",
    )
    ap.add_argument(
        "--recipe",
        default=SHIPPED_RECIPE,
        help="the configs the fold models were trained with, as stored in calibrated_on",
    )
    ap.add_argument(
        "--interval-scale",
        choices=["residual", "learned"],
        default="learned",
        help="the HC interval's difficulty scale (fetalhead.uncertainty.fit_interval)",
    )
    ap.add_argument(
        "--evidence",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="another benchmark's JSON result, stored as cross_validation[KEY] (for "
        "example how a recipe change compares on the same folds, or how this calibration "
        "carries over to it); repeatable",
    )
    ap.add_argument(
        "--evaluation",
        type=Path,
        help="a 'fetalhead evaluate' output folder of these weights with the settings "
        "stored here: its summary.json becomes meta.evaluation (run it after calibrating)",
    )
    args = ap.parse_args()
    if (args.threshold_images is None) != (args.threshold_pixel_size_csv is None):
        ap.error("--threshold-images and --threshold-pixel-size-csv go together")
    rows, folds = read_heldout_rows(args.heldout, args.boundary_level)
    if not rows:
        ap.error(f"{args.heldout}: no held-out rows at boundary level {args.boundary_level:g}")
    for r in rows:  # the HC band each row's interval is calibrated in
        if np.isfinite(r.get("plain_hc_mm", np.nan)):
            r["band"] = band_of(r["plain_hc_mm"])
    report = json.loads(args.report.read_text())
    scale: IntervalScale = args.interval_scale
    models = [fit_interval(rows, level, scale) for level in LEVELS]
    m90 = models[LEVELS.index(0.9)]
    ok = [r for r in rows if "rel_rms" in r and np.isfinite(r.get("plain_hc_mm", np.nan))]
    error_key = "plain_hc_mm"
    if args.flag_errors:
        try:
            reported = read_column(args.flag_errors)
        except ValueError as err:
            ap.error(f"--flag-errors: {err}")
        ok = [
            r | {"reported_hc_mm": reported[r["filename"]]} for r in ok if r["filename"] in reported
        ]
        error_key = "reported_hc_mm"
    flag = fit_flag(ok, share=FLAG_SHARE, error_hc_key=error_key)
    tta_gain = -report["accuracy"]["tta_minus_plain_adf_mm"][0]
    ck = Checkpoint.load(args.weights)
    ck.meta["calibration"] = {
        "hc_interval": [m.to_dict() for m in models],
        "qc_flag": flag.to_dict(),
        "calibrated_on": (
            f"{len(ok)} held-out images of {len(folds)} cross-validation folds by scan prefix "
            f"({', '.join(folds)}; {args.recipe}; models trained on the other folds), maps "
            f"post-processed as predict does without TTA at P = {args.boundary_level:g}"
        ),
        "coverage_cross_fold": report["intervals"],
    }
    if args.flag_errors:
        ck.meta["calibration"]["qc_flag_errors_of"] = args.flag_errors
    ck.meta["cross_validation"] = {
        "folds": folds,
        "accuracy": report["accuracy"],
        "tta_gain_adf_mm": tta_gain,
        "tta_rule": f"on only if cross-validated ADF is at least {TTA_MIN_GAIN_MM} mm lower",
    }
    if args.recipes:
        ck.meta["cross_validation"]["recipes"] = {
            "base": "configs/cv5_resunet16.yaml",
            "source": "benchmarks/compare_recipes.py (benchmarks/results/recipes/report.md)",
            "comparisons": json.loads(args.recipes.read_text()),
        }
    ck.meta.setdefault("inference", {})["tta"] = bool(tta_gain >= TTA_MIN_GAIN_MM)
    ck.meta["inference"]["level"] = args.boundary_level
    store_choice(ck.meta, "level_by_band", args.level_by_band, "levels", "level_by_band.py")
    store_choice(ck.meta, "shape_prior", args.shape_prior, "prior", "aspect_prior.py")
    if args.threshold_images:
        scores = shipped_scores(ck, args.threshold_images, args.threshold_pixel_size_csv)
        flag = dataclasses.replace(flag, threshold=float(np.quantile(scores, 1.0 - FLAG_SHARE)))
        ck.meta["calibration"]["qc_flag"] = flag.to_dict()
        ck.meta["calibration"]["qc_flag_threshold_set_on"] = (
            f"these weights' scores on {len(scores)} unlabelled images of "
            f"{args.threshold_images} (the {1 - FLAG_SHARE:.0%} quantile)"
        )
    for item in args.evidence:
        key, sep, path = item.partition("=")
        if not (sep and key and path):
            ap.error(f"--evidence wants KEY=JSON, got {item!r}")
        ck.meta["cross_validation"][key] = {"source": path, **json.loads(Path(path).read_text())}
    if args.evaluation:
        summary = json.loads((args.evaluation / "summary.json").read_text())
        ck.meta["evaluation"] = weights_evaluation(summary)
    ck.save(args.weights)
    print(
        f"wrote {args.weights}: {scale} interval scale, q90 {m90.q}, "
        f"qc flag threshold {flag.threshold:.2f}, "
        f"TTA gain {tta_gain:+.3f} mm -> tta {ck.meta['inference']['tta']}, "
        f"levels by band {ck.meta['inference'].get('level_by_band')}, "
        f"shape prior {ck.meta['inference'].get('shape_prior')}"
    )


if __name__ == "__main__":
    main()
