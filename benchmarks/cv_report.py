"""Cross-validated accuracy, TTA, HC intervals and the qc trade-off from held-out maps.

Reads the held-out probability maps that ``scripts/cross_validate.py`` saved for
each fold (every HC18 image is held out exactly once), post-processes them as
``fetalhead predict`` does, and reports, side by side on the same images:

1. HC18 metrics (DSC, HD, ADF, DF) without and with flip TTA: means with 95 %
   bootstrap intervals (resampling scan prefixes), per trimester, and the paired
   TTA - plain ADF difference.
2. Split-conformal HC intervals, evaluated across folds: the interval for fold k
   is calibrated on the other folds only. Coverage and median width by trimester.
3. The qc trade-off: the share of images flagged against the share of large
   errors (|HC error| > 5 mm) caught, for the logistic flag fitted, for each fold,
   on the other folds only.

Usage::

    python benchmarks/cv_report.py ../shared/data/hc18/training_set --runs runs/cv5 \
        --out benchmarks/results/cv5

``--add-rows CSV`` adds the per-image rows of folds whose maps are gone (a committed
``per_image.csv``, made at the same boundary level), so that a recipe trained fold by
fold over several sessions is reported over all its folds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from skull_ring import ring_features

from fetalhead.data import Case, find_cases, kfold_by_prefix, label_ellipse
from fetalhead.evaluate import ellipse_dice, hausdorff_ellipses
from fetalhead.geometry.ellipse import Ellipse, boundary_rms
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.postprocess import postprocess
from fetalhead.predict import fit_by_band
from fetalhead.readers import read_gray
from fetalhead.training import TrainConfig
from fetalhead.uncertainty import (
    LARGE_ERROR_MM,
    band_of,
    fit_flag,
    fit_interval,
    interval_features,
    profile_features,
)

TRIMESTERS = ("first", "second", "third")
#: Post-processing variants compared with the default (the report's level, |grad p|^2 weights).
VARIANTS = {
    "unweighted": {"weight_power": 0.0},
    "grad4": {"weight_power": 4.0},
    "level0.4": {"level": 0.4},
    "level0.55": {"level": 0.55},
    "level0.6": {"level": 0.6},
    "level0.65": {"level": 0.65},
    "level0.7": {"level": 0.7},
}
#: The shipped qc flag flags this share of the calibration images.
FLAG_SHARE = 0.10


def case_row(case: Case, fold: int) -> dict[str, Any]:
    """The columns that name a held-out image: file, prefix, fold, reference HC, trimester."""
    return {
        "filename": case.image.name,
        "prefix": case.prefix,
        "fold": fold,
        "hc_ref_mm": case.hc_mm,
        "trimester": trimester(hadlock_1984(case.hc_mm).weeks),
    }


def ellipse_metrics(e: Ellipse, case: Case, ref: Ellipse, shape: tuple[int, int]) -> dict:
    """HC, DF, DSC and HD of a measured ellipse against the reference, in mm."""
    px = case.pixel_size_mm
    hc = e.perimeter * px
    return {
        "hc_mm": hc,
        "df_mm": hc - case.hc_mm,
        "dsc": ellipse_dice(e, ref, shape),
        "hd_mm": hausdorff_ellipses(e, ref) * px,
    }


def metric_columns(
    prefix: str, e: Ellipse | None, case: Case, ref: Ellipse, shape: tuple[int, int]
) -> dict:
    """:func:`ellipse_metrics` as ``<prefix>_hc_mm``, ``_df_mm``, ... (NaN: no head found)."""
    if e is None:
        return {f"{prefix}_{k}": math.nan for k in ("hc_mm", "df_mm", "dsc", "hd_mm")}
    return {f"{prefix}_{k}": v for k, v in ellipse_metrics(e, case, ref, shape).items()}


def held_out_cases(fold_dir: Path, data: str | Path) -> tuple[int, list[Case]]:
    """``(fold, cases)``: the cases of ``data`` that a fold's run (``runs/NAME/foldK``) held out.

    The split is the run's own: its ``config.json`` read by ``TrainConfig.from_file``.
    """
    cfg = TrainConfig.from_file(fold_dir / "config.json")
    fold = int(fold_dir.name.removeprefix("fold"))
    return fold, kfold_by_prefix(find_cases(data), cfg.folds, fold, cfg.effective_split_seed)[1]


#: The boundary level of each HC band that the shipped weights use (first, second, third).
SHIPPED_LEVELS = (0.55, 0.55, 0.6)


def parse_run_arguments(
    description: str, more: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, dict[str, float]]:
    """``DATA --run RUN [--levels FIRST SECOND THIRD]`` parsed, and the levels by HC band.

    For the scripts that measure a cross-validation run's held-out maps as ``predict``
    does; the levels default to the shipped ones. ``more`` adds a script's own options.
    """
    ap = argparse.ArgumentParser(description=description)
    if more is not None:
        more(ap)
    ap.add_argument("data")
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--levels", type=float, nargs=3, default=SHIPPED_LEVELS,
                    metavar=("FIRST", "SECOND", "THIRD"))  # fmt: skip
    args = ap.parse_args()
    return args, dict(zip(TRIMESTERS, args.levels, strict=True))


def held_out_maps(data: str, run: Path) -> Iterator[tuple[int, Case, np.ndarray, Letterbox]]:
    """``(fold, case, map, letterbox)`` for each image a fold of ``run`` held out.

    The map is the plain (unflipped) one of ``RUN/foldK/heldout_maps.npz``, as float32,
    placed in the image as the fold was trained: letterboxed, or squashed where its
    ``config.json`` says ``keep_aspect: false``.
    """
    cases = {c.image.name: c for c in find_cases(data)}
    for maps in sorted(run.glob("fold*/heldout_maps.npz")):
        fold = int(maps.parent.name.removeprefix("fold"))
        config = json.loads((maps.parent / "config.json").read_text())
        keep_aspect = config.get("keep_aspect", True)
        z = np.load(maps)
        for name, plain in zip(z["names"], z["plain"], strict=True):
            case = cases[str(name)]
            prob = plain.astype(np.float32)
            h, w = read_gray(case.image).shape
            yield fold, case, prob, Letterbox(h, w, *prob.shape, keep_aspect)


def held_out_fits(
    data: str, run: Path, levels: dict[str, float]
) -> Iterator[tuple[int, Case, Ellipse, Letterbox]]:
    """``(fold, case, ellipse, letterbox)`` for each held-out image of ``run`` with a head.

    The ellipse is fitted to the plain map (:func:`held_out_maps`) as ``predict`` fits
    it, at the level of its HC band (``levels``; before any shape prior).
    """
    for fold, case, prob, lb in held_out_maps(data, run):
        e = fit_by_band(prob, lb, "full", levels, levels["second"], case.pixel_size_mm)[0]
        if e is not None:
            yield fold, case, e, lb


def per_image(data: str, runs: Path, level: float = 0.5) -> list[dict]:
    cases = {c.image.name: c for c in find_cases(data)}
    rows = []
    for fold_dir in sorted(runs.glob("fold*")):
        maps = fold_dir / "heldout_maps.npz"
        if not maps.exists():
            continue
        cached = fold_dir / f"heldout_rows_level{level:g}.json"
        if cached.exists() and cached.stat().st_mtime > maps.stat().st_mtime:
            old = json.loads(cached.read_text())
            if all({"blur", "ring_contrast"} <= r.keys() or "rel_rms" not in r for r in old):
                rows += old
                continue
        start = len(rows)
        z = np.load(maps)
        fold = int(fold_dir.name.removeprefix("fold"))
        # Letterboxed (aspect kept) or squashed, as the fold was trained.
        keep_aspect = json.loads((fold_dir / "config.json").read_text()).get("keep_aspect", True)
        for name, plain, flipped in zip(z["names"], z["plain"], z["flipped"], strict=True):
            case = cases[str(name)]
            img = read_gray(case.image)
            h, w = img.shape
            lb = Letterbox(h, w, *plain.shape, keep_aspect)
            ref = label_ellipse(case)
            px = case.pixel_size_mm
            row = case_row(case, fold)
            fits = {}
            for variant, prob in (
                ("plain", plain.astype(np.float32)),
                ("flip", flipped.astype(np.float32)),
                ("tta", 0.5 * (plain.astype(np.float32) + flipped.astype(np.float32))),
            ):
                e, contour, conf, reasons = postprocess(prob, lb, "full", level=level)
                fits[variant] = (e, contour, conf, reasons)
                if variant == "flip":
                    row["hc_flip_mm"] = e.perimeter * px if e else math.nan
                    continue
                row |= metric_columns(variant, e, case, ref, (h, w))
                row[f"{variant}_qc"] = "no_head_found" if e is None else ";".join(reasons) or "ok"
            # Post-processing variants on the plain map, paired with the default.
            for variant, kw in VARIANTS.items():
                ev, _, _, _ = postprocess(plain.astype(np.float32), lb, "full", **kw)
                row[f"{variant}_df_mm"] = ev.perimeter * px - case.hc_mm if ev else math.nan
            e, contour, conf, reasons = fits["plain"]
            if e is not None and contour is not None and conf is not None:
                rms = boundary_rms(e, contour)
                row |= interval_features(e, rms, conf, "touches_border" in reasons)
                row |= profile_features(lb.crop(plain), lb.scale, e, level)
                row |= ring_features(img, e)
            rows.append(row)
        cached.write_text(json.dumps(rows[start:]))
    return rows


def read_per_image_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Held-out rows from ``cv_report.py``'s ``per_image.csv``, and the folds they came from.

    Numbers are read back as floats and the fold as an int; an empty cell (a feature
    that was not computed, e.g. where no head was found) leaves its key out, as in the
    cached JSON rows.
    """
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v == "":
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            row["fold"] = int(row["fold"])
            rows.append(row)
    return rows, [f"fold{k}" for k in sorted({r["fold"] for r in rows})]


def read_column(spec: str) -> dict[str, float]:
    """``{filename: value}`` of one column of a per-image CSV, given as ``CSV:COLUMN``.

    The table is read with :func:`read_per_image_csv` (so it needs a ``fold`` column);
    images whose cell is empty are left out.

    Raises:
        ValueError: If ``spec`` names no column, or the table has no ``filename`` column
            or no cell of that column.

    """
    path, _, column = spec.rpartition(":")
    if not path or not column:
        raise ValueError(f"expected CSV:COLUMN, got {spec!r}")
    rows = read_per_image_csv(Path(path))[0]
    values = {r["filename"]: float(r[column]) for r in rows if "filename" in r and column in r}
    if not values:
        raise ValueError(f"{path} has no 'filename' column or no value in column {column!r}")
    return values


def merge_rows(rows: list[dict], extra: list[dict], source: str) -> list[dict]:
    """``rows`` and ``extra`` (rows of other folds, e.g. read from a committed per_image.csv).

    Raises:
        ValueError: If a fold has rows in both: each held-out image must count once.

    """
    both = {r["fold"] for r in rows} & {r["fold"] for r in extra}
    if both:
        raise ValueError(f"{source}: folds {sorted(both)} are already in the runs")
    return rows + extra


def cluster_resamples(groups: np.ndarray, n: int = 2000, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` bootstrap index arrays, each drawing whole groups (scan prefixes) with replacement."""
    uniq = np.unique(groups)
    index = {g: np.flatnonzero(groups == g) for g in uniq}
    rng = np.random.default_rng(seed)
    for _ in range(n):
        pick = rng.choice(uniq, size=len(uniq), replace=True)
        yield np.concatenate([index[g] for g in pick])


def cluster_bootstrap(values: np.ndarray, groups: np.ndarray, n: int = 2000, seed: int = 0):
    """Mean and 95 % interval, resampling groups (scan prefixes) with replacement."""
    ok = np.isfinite(values)
    values, groups = values[ok], groups[ok]
    means = [values[idx].mean() for idx in cluster_resamples(groups, n, seed)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def fmt(m: tuple[float, float, float], scale: float = 1.0, sign: bool = False) -> str:
    s = "+" if sign else ""
    return f"{m[0] * scale:{s}.2f} ({m[1] * scale:{s}.2f} to {m[2] * scale:{s}.2f})"


def metric_summary(
    dsc: np.ndarray, hd_mm: np.ndarray, df_mm: np.ndarray, groups: np.ndarray, tri: np.ndarray
) -> dict:
    """DSC, HD, ADF and DF with bootstrap intervals over ``groups``; ADF and DF by trimester."""
    adf = np.abs(df_mm)
    return {
        "dsc": cluster_bootstrap(dsc, groups),
        "hd_mm": cluster_bootstrap(hd_mm, groups),
        "adf_mm": cluster_bootstrap(adf, groups),
        "df_mm": cluster_bootstrap(df_mm, groups),
        "by_trimester": {
            t: {
                "n": int((tri == t).sum()),
                "adf_mm": cluster_bootstrap(adf[tri == t], groups[tri == t]),
                "df_mm": cluster_bootstrap(df_mm[tri == t], groups[tri == t]),
            }
            for t in TRIMESTERS
        },
    }


def accuracy_tables(rows: list[dict]) -> tuple[str, dict]:
    g = np.array([r["prefix"] for r in rows])
    tri = np.array([r["trimester"] for r in rows])
    out = {}
    lines = [
        "| variant | n | DSC % | HD mm | ADF mm | DF mm |",
        "|---|---|---|---|---|---|",
    ]
    for v in ("plain", "tta"):
        col = {k: np.array([r[f"{v}_{k}"] for r in rows], float) for k in ("dsc", "hd_mm", "df_mm")}
        res = metric_summary(col["dsc"], col["hd_mm"], col["df_mm"], g, tri)
        out[v] = res
        lines.append(
            f"| {v} | {np.isfinite(col['df_mm']).sum()} | {fmt(res['dsc'], 100)} | "
            f"{fmt(res['hd_mm'])} | {fmt(res['adf_mm'])} | {fmt(res['df_mm'], sign=True)} |"
        )
    lines += ["", "| variant | trimester | n | ADF mm | DF mm |", "|---|---|---|---|---|"]
    for v in ("plain", "tta"):
        for t in TRIMESTERS:
            b = out[v]["by_trimester"][t]
            lines.append(
                f"| {v} | {t} | {b['n']} | {fmt(b['adf_mm'])} | {fmt(b['df_mm'], sign=True)} |"
            )
    d = np.abs(np.array([r["tta_df_mm"] for r in rows], float)) - np.abs(
        np.array([r["plain_df_mm"] for r in rows], float)
    )
    out["tta_minus_plain_adf_mm"] = cluster_bootstrap(d, g)
    lines += [
        "",
        f"Paired ADF difference, TTA - plain: {fmt(out['tta_minus_plain_adf_mm'], sign=True)} mm",
        "",
        "Post-processing variants on the plain maps, paired with the default (the boundary "
        "level of this report, |grad p|^2 weights):",
        "",
        "| variant | ADF - default mm | third-trimester DF mm |",
        "|---|---|---|",
    ]
    base = np.abs(np.array([r["plain_df_mm"] for r in rows], float))
    for v in VARIANTS:
        df = np.array([r[f"{v}_df_mm"] for r in rows], float)
        diff = cluster_bootstrap(np.abs(df) - base, g)
        third = cluster_bootstrap(df[tri == "third"], g[tri == "third"])
        out[f"variant_{v}"] = {"adf_minus_default_mm": diff, "third_df_mm": third}
        lines.append(f"| {v} | {fmt(diff, sign=True)} | {fmt(third, sign=True)} |")
    return "\n".join(lines), out


def conformal_tables(rows: list[dict], level: float) -> tuple[str, dict]:
    ok = [r for r in rows if math.isfinite(r.get("plain_hc_mm", math.nan)) and "rel_rms" in r]
    folds = sorted({r["fold"] for r in ok})
    if len(folds) < 2:
        return "(needs at least two folds)", {}
    covered, width, tri, wide, wide_big = [], [], [], [], []
    for k in folds:
        cal = [r for r in ok if r["fold"] != k]
        test = [r for r in ok if r["fold"] == k]
        model = fit_interval(cal, level)
        # The flag before the logistic one, for comparison: the widest share of the
        # calibration folds' intervals, in mm.
        halves = [model.scale(r["plain_hc_mm"], r) * r["plain_hc_mm"] for r in cal]
        limit = np.quantile(halves, 1 - FLAG_SHARE)
        for r in test:
            lo, hi = model.interval(r["plain_hc_mm"], r)
            covered.append(lo <= r["hc_ref_mm"] <= hi)
            width.append(hi - lo)
            tri.append(r["trimester"])
            wide.append((hi - lo) / 2 > limit)
            wide_big.append(abs(r["plain_df_mm"]) > LARGE_ERROR_MM)
    covered, width, tri = np.array(covered), np.array(width), np.array(tri)
    lines = [
        f"Nominal level {level:.0%}; each fold's intervals calibrated on the other folds.",
        "",
        "| trimester | n | coverage | median width mm | 90th pct width mm |",
        "|---|---|---|---|---|",
    ]
    res = {}
    for t in (*TRIMESTERS, "all"):
        sel = np.ones_like(covered) if t == "all" else tri == t
        if sel.sum() == 0:
            continue
        res[t] = {
            "n": int(sel.sum()),
            "coverage": float(covered[sel].mean()),
            "median_width_mm": float(np.median(width[sel])),
            "p90_width_mm": float(np.percentile(width[sel], 90)),
        }
        lines.append(
            f"| {t} | {res[t]['n']} | {res[t]['coverage']:.1%} | "
            f"{res[t]['median_width_mm']:.2f} | {res[t]['p90_width_mm']:.2f} |"
        )
    # qc trade-off: for each share, the flag is fitted on the other folds and
    # judged on the held-out fold.
    b = np.array([abs(r["plain_df_mm"]) > LARGE_ERROR_MM for r in ok])
    lines += [
        "",
        f"qc trade-off (logistic flag fitted on the other folds, each fold judged; large "
        f"error = |HC error| > {LARGE_ERROR_MM:g} mm, {b.sum()} of {len(b)} images):",
        "",
        "| share flagged on calibration | flagged | large errors caught |",
        "|---|---|---|",
    ]
    curve = []
    for share in (0.02, 0.05, 0.10, 0.15, 0.20, 0.30):
        flagged = np.zeros(len(ok), bool)
        for k in folds:
            flag = fit_flag([r for r in ok if r["fold"] != k], share)
            for i, r in enumerate(ok):
                if r["fold"] == k:
                    flagged[i] = flag.flags(r["plain_hc_mm"], r)
        caught = float((flagged & b).sum() / max(b.sum(), 1))
        curve.append({"share": share, "flagged": float(flagged.mean()), "caught": caught})
        lines.append(f"| {share:.0%} | {flagged.mean():.1%} | {caught:.1%} |")
        if share == FLAG_SHARE:
            res["qc_flag_cross_fold"] = {
                "flagged": float(flagged.mean()),
                "caught": caught,
                "large_errors": int(b.sum()),
                "n": len(b),
            }
    lines += [
        "",
        f"The shipped rule flags {FLAG_SHARE:.0%} of the calibration images; judged fold by "
        f"fold: {res['qc_flag_cross_fold']['flagged']:.1%} flagged, "
        f"{res['qc_flag_cross_fold']['caught']:.1%} of the {b.sum()} large errors caught.",
    ]
    wide, wide_big = np.array(wide), np.array(wide_big)
    res["wide_interval_flag_cross_fold"] = {
        "flagged": float(wide.mean()),
        "caught": float((wide & wide_big).sum() / max(wide_big.sum(), 1)),
    }
    lines.append(
        f"For comparison, the previous flag (the widest {FLAG_SHARE:.0%} of the calibration "
        f"folds' {level:.0%} intervals, in mm): {wide.mean():.1%} flagged, "
        f"{res['wide_interval_flag_cross_fold']['caught']:.1%} caught."
    )
    res["qc_tradeoff"] = curve
    return "\n".join(lines), res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--level", type=float, default=0.9, help="interval coverage")
    ap.add_argument(
        "--boundary-level",
        type=float,
        default=0.6,
        help="iso-probability of the head boundary (the shipped default)",
    )
    ap.add_argument(
        "--add-rows",
        type=Path,
        action="append",
        default=[],
        help="a per_image.csv of folds whose maps are not in --runs (made at the same level)",
    )
    args = ap.parse_args()
    rows = per_image(args.data, args.runs, args.boundary_level)
    for path in args.add_rows:
        rows = merge_rows(rows, read_per_image_csv(path)[0], str(path))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "per_image.csv", "w", newline="") as fh:
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], k))
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    for r in rows:  # the HC band each row's interval is calibrated in
        if math.isfinite(r.get("plain_hc_mm", math.nan)):
            r["band"] = band_of(r["plain_hc_mm"])
    acc_md, acc = accuracy_tables(rows)
    conf_md, conf = conformal_tables(rows, args.level)
    folds = sorted({r["fold"] for r in rows})
    text = (
        f"# Cross-validation report ({len(rows)} held-out images, folds {folds}; "
        f"boundary at p = {args.boundary_level:g})\n\n"
        f"## Accuracy (mean, 95 % bootstrap interval over scan prefixes)\n\n{acc_md}\n\n"
        f"## HC intervals and qc\n\n{conf_md}\n"
    )
    (args.out / "report.md").write_text(text)
    (args.out / "report.json").write_text(
        json.dumps({"accuracy": acc, "intervals": conf}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()
