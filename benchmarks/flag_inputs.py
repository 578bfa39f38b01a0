"""Would another input make the qc flag catch more of the large errors? Judged fold by fold.

The shipped flag (``fetalhead.uncertainty.FlagModel``) is a ridge logistic regression of
"|HC error| > 5 mm" on :data:`~fetalhead.uncertainty.FLAG_INPUTS`, cut so that a set
share of its calibration images is flagged. Here the error is that of the HC the shipped
defaults report: the boundary level by HC band, with each fold's levels chosen on the
other folds (``picks_by_fold`` of ``benchmarks/results/level_by_band/report.json``).
For each candidate set of inputs, the flag is fitted on four folds' held-out rows, cut
at each share of them, and judged on the fifth fold. Candidates, each appended to the
shipped inputs as ``ln(value + 0.001)``:

- ``flip``: |HC of the flipped map - HC| / HC (costs a second network pass, as TTA does);
- ``level_spread``: (HC at P = 0.55 - HC at P = 0.7) / HC, how far the boundary moves
  with the level (no extra pass);
- ``pixel_size``: the image's pixel size in mm (with ``--pixel-sizes``);
- ``ring_contrast``, ``ring_weak``, ``ring_inside``: how clearly the image shows a skull
  ridge along the fitted ellipse (``benchmarks/skull_ring.py``; no extra pass), entered
  as they are (they are log ratios already). With ``--ring``, only the rows that carry
  them (those of folds whose maps ``cv_report.py`` scored with them) are judged;
- any column of another per-image table (``--extra-rows CSV --extra-inputs NAME ...``),
  for example the disagreement between input sizes of ``benchmarks/scale_passes.py``
  (``scale176x272_rel``: costs one more network pass). Only the images in both tables,
  with every extra input known, are judged, the shipped inputs on the same images.

Usage::

    python benchmarks/flag_inputs.py benchmarks/results/cv5/per_image.csv \
        --pixel-sizes ../shared/data/hc18/training_set_pixel_size_and_HC.csv
    python benchmarks/flag_inputs.py benchmarks/results/cv5/per_image.csv \
        --transfer benchmarks/results/recipes_fold2/shipped_recipe_per_image.csv

With ``--transfer``, the flag is also fitted on the 8-epoch rows of the other folds and
judged on another recipe's held-out rows (the shipped recipe's, whose maps are sharper).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from cv_report import TRIMESTERS, read_column, read_per_image_csv
from level_by_band import df_at

from fetalhead.uncertainty import LARGE_ERROR_MM, band_of, flag_inputs, ridge_logistic

SHARES = (0.05, 0.10, 0.15, 0.20)
RING = ("ring_contrast", "ring_weak", "ring_inside")
TABLE_HEAD = (
    "| inputs | "
    + " | ".join(f"cut at {s:.0%}: flagged / caught" for s in SHARES)
    + " |\n|---|"
    + "---|" * len(SHARES)
)


def banded_rows(rows: list[dict], picks: dict[int, dict[str, float]]) -> list[dict]:
    """Rows with ``hc_mm`` and ``df_mm`` of the banded HC, where every input is known."""
    out = []
    for r in rows:
        first = df_at(r, 0.55)
        if not (math.isfinite(first) and "blur" in r and math.isfinite(df_at(r, 0.7))):
            continue
        level = picks[r["fold"]][band_of(first + r["hc_ref_mm"])]
        df = df_at(r, level)
        out.append(r | {"hc_mm": r["hc_ref_mm"] + df, "df_mm": df})
    return out


def carries(row: dict, names: tuple[str, ...] | list[str]) -> bool:
    """Whether ``row`` has a finite value for each of ``names``."""
    return all(math.isfinite(row.get(k, math.nan)) for k in names)


def candidate(row: dict, name: str) -> float:
    hc = row["hc_mm"]
    if name == "flip":
        value = abs(row["hc_flip_mm"] - row["plain_hc_mm"]) / hc
    elif name == "level_spread":
        value = abs(df_at(row, 0.55) - df_at(row, 0.7)) / hc
    elif name in RING:
        return float(row[name])
    else:
        value = row[name]
    return math.log(value + 1e-3)


def design(rows: list[dict], extra: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The flag's inputs (shipped, then ``extra``) and "a large error", one row an image."""
    x = np.array([[*flag_inputs(r["hc_mm"], r), *(candidate(r, e) for e in extra)] for r in rows])
    return x, np.array([abs(r["df_mm"]) > LARGE_ERROR_MM for r in rows])


def curve_row(name: str, curve: list[dict]) -> str:
    cells = " | ".join(f"{c['flagged']:.1%} / {c['caught']:.1%}" for c in curve)
    return f"| {name} | {cells} |"


def fitted_scores(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Logistic scores of ``x`` by a ridge fit (l2 = 1) on standardised ``x_fit``, ``y_fit``."""
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-9
    beta = ridge_logistic((x_fit - mean) / std, y_fit.astype(float), l2=1.0)
    return beta[0] + ((x - mean) / std) @ beta[1:]


def judge(rows: list[dict], extra: tuple[str, ...]) -> list[dict]:
    """Flagged share and large errors caught, per share, each fold flagged by the others."""
    x, y = design(rows, extra)
    fold = np.array([r["fold"] for r in rows])
    hc = np.array([r["hc_mm"] for r in rows])
    out = []
    for share in SHARES:
        flagged = np.zeros(len(rows), bool)
        for k in np.unique(fold):
            fit = fold != k
            score = fitted_scores(x[fit], y[fit], x)
            cut = np.quantile(score[fit], 1.0 - share)
            outside = (hc < hc[fit].min()) | (hc > hc[fit].max())
            flagged[~fit] = (score[~fit] > cut) | outside[~fit]
        out.append(
            {
                "share": share,
                "flagged": float(flagged.mean()),
                "caught": float((flagged & y).sum() / y.sum()),
            }
        )
    return out


def in_sample(rows: list[dict], extra: tuple[str, ...]) -> list[dict]:
    """The flag fitted, cut and judged on the same rows: an optimistic bound.

    No held-out image is left, so this is what these inputs could give at best, not
    what a flag will do on new images (that is :func:`judge`).
    """
    x, y = design(rows, extra)
    score = fitted_scores(x, y, x)
    out = []
    for share in SHARES:
        flagged = score > np.quantile(score, 1.0 - share)
        caught = float((flagged & y).sum() / y.sum())
        out.append({"share": share, "flagged": float(flagged.mean()), "caught": caught})
    return out


def transfer(rows: list[dict], other: list[dict], extra: tuple[str, ...]) -> list[dict]:
    """The flag fitted on ``rows``, judged on another recipe's held-out ``other``.

    Only the folds of ``rows`` that ``other`` does not hold out are fitted on, so that no
    image is both fitted on and judged. The cut is set on ``other``'s own scores (the
    most doubtful share of them), as the shipped threshold is set on the shipped model's
    scores of unlabelled images; the large-error labels of ``other`` are read only to
    count what was caught.
    """
    judged = {r["fold"] for r in other}
    rows = [r for r in rows if r["fold"] not in judged]
    (x, y), (xo, yo) = design(rows, extra), design(other, extra)
    score = fitted_scores(x, y, xo)
    hc, hco = np.array([r["hc_mm"] for r in rows]), np.array([r["hc_mm"] for r in other])
    outside = (hco < hc.min()) | (hco > hc.max())
    out = []
    for share in SHARES:
        flagged = (score > np.quantile(score, 1.0 - share)) | outside
        caught = float((flagged & yo).sum() / yo.sum()) if yo.any() else math.nan
        out.append({"share": share, "flagged": float(flagged.mean()), "caught": caught})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("per_image", type=Path)
    ap.add_argument(
        "--levels",
        type=Path,
        default=Path(__file__).parent / "results" / "level_by_band" / "report.json",
        help="level_by_band.py's report (its per-fold picks)",
    )
    ap.add_argument("--pixel-sizes", type=Path, help="HC18 CSV of pixel sizes, to judge them")
    ap.add_argument(
        "--transfer",
        type=Path,
        help="another recipe's held-out rows (per_image.csv) to judge the flag on, fitted on"
        " PER_IMAGE's other folds",
    )
    ap.add_argument(
        "--ring", action="store_true", help="judge the skull-ridge inputs, on the rows with them"
    )
    ap.add_argument(
        "--extra-rows",
        type=Path,
        help="per-image rows (with filename and fold) that carry more candidate inputs",
    )
    ap.add_argument(
        "--extra-inputs",
        nargs="+",
        default=[],
        help="columns of --extra-rows to judge, each alone and all together",
    )
    ap.add_argument(
        "--errors-from",
        metavar="CSV:COLUMN",
        help="judge the error of another reported HC: COLUMN of per-image rows CSV (for "
        "example hc_prior_mm of benchmarks/aspect_prior.py's rows); the flag's inputs "
        "stay those of the fit at the banded levels, as predict reads them",
    )
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args()
    picks = {int(k): v for k, v in json.loads(args.levels.read_text())["picks_by_fold"].items()}
    rows, _ = read_per_image_csv(args.per_image)
    candidates: list[tuple[str, ...]] = [(), ("flip",), ("level_spread",), ("flip", "level_spread")]
    if args.pixel_sizes:
        with open(args.pixel_sizes, newline="") as fh:
            px = {r["filename"]: float(r["pixel size(mm)"]) for r in csv.DictReader(fh)}
        rows = [r | {"pixel_size": px[r["filename"]]} for r in rows]
        candidates.append(("pixel_size",))
    if args.ring:
        rows = [r for r in rows if carries(r, RING)]
        candidates += [(k,) for k in RING] + [RING]
    if args.extra_rows:
        more = {r["filename"]: r for r in read_per_image_csv(args.extra_rows)[0]}
        known = {name for name, r in more.items() if carries(r, args.extra_inputs)}
        print(
            f"# {len(more) - len(known)} of the {len(more)} images of {args.extra_rows} lack an"
            f" extra input (no head found in that pass) and are left out"
        )
        rows = [r | {k: more[r["filename"]][k] for k in args.extra_inputs}
                for r in rows if r["filename"] in known]  # fmt: skip
        candidates += [(k,) for k in args.extra_inputs]
        if len(args.extra_inputs) > 1:
            candidates.append(tuple(args.extra_inputs))
    rows = banded_rows(rows, picks)
    if args.errors_from:
        path, _, column = args.errors_from.rpartition(":")
        reported = read_column(args.errors_from)
        rows = [r | {"df_mm": reported[r["filename"]] - r["hc_ref_mm"]}
                for r in rows if r["filename"] in reported]  # fmt: skip
        print(f"# errors of {column} from {path}")
    large = [abs(r["df_mm"]) > LARGE_ERROR_MM for r in rows]
    by_tri = {t: sum(g for g, r in zip(large, rows, strict=True) if r["trimester"] == t)
              for t in TRIMESTERS}  # fmt: skip
    counts = ", ".join(f"{t} {n}" for t, n in by_tri.items())
    print(
        f"# qc flag inputs: {len(rows)} held-out images, {sum(large)} with |HC error| > "
        f"{LARGE_ERROR_MM:g} mm at the banded levels ({counts})"
    )
    print()
    print(TABLE_HEAD)
    report = {"n": len(rows), "large_errors": int(sum(large)), "candidates": {}}
    named = {"shipped" + "".join(f" + {e}" for e in extra): extra for extra in candidates}
    for name, extra in named.items():
        report["candidates"][name] = curve = judge(rows, extra)
        print(curve_row(name, curve))
    best = max(report["candidates"].items(), key=lambda kv: kv[1][1]["caught"])[0]
    print()
    print(f"# {best}, fitted, cut and judged on all {len(rows)} rows (optimistic: none held out)")
    print()
    print(TABLE_HEAD)
    report["in_sample"] = {"inputs": best}
    for name in dict.fromkeys(["shipped", best]):
        report["in_sample"][name] = curve = in_sample(rows, named[name])
        print(curve_row(name, curve))
    if args.transfer:
        other = banded_rows(read_per_image_csv(args.transfer)[0], picks)
        n_large = sum(abs(r["df_mm"]) > LARGE_ERROR_MM for r in other)
        print()
        print(
            f"# fitted on the other folds of PER_IMAGE, judged on {args.transfer} "
            f"({len(other)} images, {n_large} with |HC error| > {LARGE_ERROR_MM:g} mm), "
            "cut on their own scores"
        )
        print()
        print(TABLE_HEAD)
        report["transfer"] = {"rows": str(args.transfer), "n": len(other), "large_errors": n_large}
        for extra in [(), ("flip",)]:
            name = "shipped" + "".join(f" + {e}" for e in extra)
            report["transfer"][name] = curve = transfer(rows, other, extra)
            print(curve_row(name, curve))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
