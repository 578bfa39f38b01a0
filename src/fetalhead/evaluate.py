"""HC18 challenge metrics on a labelled folder, using the fitted ellipses.

As in HC18, both prediction and reference are ellipses: DSC compares the
filled ellipses, HD is the symmetric Hausdorff distance between the two
ellipse contours in mm, DF is HC(pred) - HC(ref) and ADF its absolute value.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.spatial import cKDTree

from fetalhead.data import Case, find_cases, label_ellipse
from fetalhead.geometry.ellipse import Ellipse, ellipse_points, render_ellipse_mask
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.measure import Measurement
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.write.atomic import atomic_write_bytes, atomic_writer

logger = logging.getLogger(__name__)

SplitName = Literal["all", "val"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two binary masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def hausdorff_ellipses(e1: Ellipse, e2: Ellipse, n: int = 2000) -> float:
    """Symmetric Hausdorff distance (pixels) between two densely sampled ellipses."""
    p1, p2 = ellipse_points(e1, n), ellipse_points(e2, n)
    d12 = cKDTree(p2).query(p1)[0].max()
    d21 = cKDTree(p1).query(p2)[0].max()
    return float(max(d12, d21))


def ellipse_dice(pred: Ellipse, ref: Ellipse, shape: tuple[int, int]) -> float:
    """Dice of two filled ellipses rendered on an image of ``shape``."""
    return dice(render_ellipse_mask(pred, shape), render_ellipse_mask(ref, shape))


@dataclass
class CaseMetrics:
    """HC18 metrics of one image."""

    filename: str
    pixel_size_mm: float
    hc_ref_mm: float
    hc_pred_mm: float | None
    df_mm: float | None
    adf_mm: float | None
    dsc: float
    hd_mm: float | None
    trimester: str
    qc: str


def evaluate_case(case: Case, m: Measurement, shape: tuple[int, int]) -> CaseMetrics:
    """Compare one measurement with its reference ellipse.

    Raises:
        ValueError: If the case has no pixel size (millimetres are never guessed).

    """
    if case.pixel_size_mm is None:
        raise ValueError(f"{case.image.name}: no pixel size; cannot score it in mm")
    px = case.pixel_size_mm
    ref = label_ellipse(case)
    hc_ref = case.hc_mm if case.hc_mm is not None else ref.perimeter * px
    tri = trimester(hadlock_1984(hc_ref).weeks)
    if m.ellipse is None:
        return CaseMetrics(case.image.name, px, hc_ref, None, None, None, 0.0, None, tri, m.qc)
    hc = m.ellipse.perimeter * px
    return CaseMetrics(
        filename=case.image.name,
        pixel_size_mm=px,
        hc_ref_mm=hc_ref,
        hc_pred_mm=hc,
        df_mm=hc - hc_ref,
        adf_mm=abs(hc - hc_ref),
        dsc=ellipse_dice(m.ellipse, ref, shape),
        hd_mm=hausdorff_ellipses(m.ellipse, ref) * px,
        trimester=tri,
        qc=m.qc,
    )


#: Bootstrap resamples for the confidence interval of a mean.
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, n: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded, so repeatable)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n, a.size))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _stats(values: list[float | None]) -> dict[str, Any]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {
            "n": 0,
            "mean": math.nan,
            "ci95": [math.nan, math.nan],
            "sd": math.nan,
            "median": math.nan,
            "p95": math.nan,
        }
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "ci95": list(bootstrap_ci(a)),
        "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
    }


def summarise(rows: list[CaseMetrics]) -> dict[str, Any]:
    """Summary statistics, by trimester for ADF, and the five worst images."""
    failed = [r for r in rows if r.hc_pred_mm is None]
    summary: dict[str, Any] = {
        "n_images": len(rows),
        "n_no_head": len(failed),
        "dsc": _stats([r.dsc for r in rows]),
        "hd_mm": _stats([r.hd_mm for r in rows]),
        "df_mm": _stats([r.df_mm for r in rows]),
        "adf_mm": _stats([r.adf_mm for r in rows]),
        "adf_by_trimester": {
            t: _stats([r.adf_mm for r in rows if r.trimester == t])
            for t in ("first", "second", "third")
        },
        "df_by_trimester": {
            t: _stats([r.df_mm for r in rows if r.trimester == t])
            for t in ("first", "second", "third")
        },
    }
    worst = sorted(rows, key=lambda r: -(r.adf_mm if r.adf_mm is not None else math.inf))[:5]
    summary["worst"] = [asdict(r) for r in worst]
    return summary


def weights_evaluation(summary: dict[str, Any]) -> dict[str, Any]:
    """The part of an evaluation summary that weights carry as ``meta["evaluation"]``."""
    keys = ("split", "n_images", "n_no_head", "dsc", "hd_mm", "df_mm", "adf_mm")
    out = {k: summary[k] for k in keys}
    out["adf_by_trimester"] = summary["adf_by_trimester"]
    if "df_by_trimester" in summary:
        out["df_by_trimester"] = summary["df_by_trimester"]
    return out


def markdown_summary(summary: dict[str, Any], title: str, command: str | None) -> str:
    """Render a summary as Markdown."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    skipped = summary.get("skipped", {})
    lines += [
        f"Images: {summary['n_images']} (no head found: {summary['n_no_head']}). "
        "Metrics use the fitted ellipses, as HC18 does.",
    ]
    for reason, names in skipped.items():
        if names:
            lines.append(f"Not scored ({reason}): {len(names)}: {', '.join(names[:10])}")
    lines += [
        "",
        "| metric | mean | 95 % CI (bootstrap) | SD | median | 95th pct |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, scale in (
        ("dsc", "DSC (%)", 100.0),
        ("hd_mm", "HD (mm)", 1.0),
        ("df_mm", "DF (mm)", 1.0),
        ("adf_mm", "ADF (mm)", 1.0),
    ):
        s = summary[key]
        lo, hi = s["ci95"]
        lines.append(
            f"| {label} | {s['mean'] * scale:.2f} | {lo * scale:.2f}-{hi * scale:.2f} | "
            f"{s['sd'] * scale:.2f} | {s['median'] * scale:.2f} | {s['p95'] * scale:.2f} |"
        )
    lines += ["", "By trimester (GA from the reference HC, Hadlock):", ""]
    lines += [
        "| trimester | n | mean ADF (mm) | 95 % CI | mean DF (mm) | 95 % CI |",
        "|---|---|---|---|---|---|",
    ]
    for t, s in summary["adf_by_trimester"].items():
        d = summary["df_by_trimester"][t]
        lines.append(
            f"| {t} | {s['n']} | {s['mean']:.2f} | {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f} | "
            f"{d['mean']:+.2f} | {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f} |"
        )
    lines += ["", "Worst five by ADF:", "", "| file | HC ref | HC pred | ADF | DSC | qc |"]
    lines.append("|---|---|---|---|---|---|")
    for w in summary["worst"]:
        pred = f"{w['hc_pred_mm']:.1f}" if w["hc_pred_mm"] is not None else "-"
        adf = f"{w['adf_mm']:.2f}" if w["adf_mm"] is not None else "-"
        lines.append(
            f"| {w['filename']} | {w['hc_ref_mm']:.1f} | {pred} | {adf} | "
            f"{w['dsc'] * 100:.2f} | {w['qc']} |"
        )
    return "\n".join(lines) + "\n"


def _labelled_cases(
    data: str | Path, split: SplitName, val_files: list[str] | None
) -> tuple[list[Case], list[str]]:
    """The cases to score, and the names of those without a pixel size (skipped)."""
    cases = find_cases(data)
    if split == "val":
        if not val_files:
            raise ValueError("the checkpoint records no validation files; use --split all")
        wanted = set(val_files)
        cases = [c for c in cases if c.image.name in wanted]
    elif split != "all":
        raise ValueError(f"split must be 'val' or 'all', got {split!r}")
    if not cases:
        raise ValueError(f"{data}: no labelled images to evaluate")
    no_px = [c.image.name for c in cases if c.pixel_size_mm is None]
    if no_px:
        logger.warning(
            "%d images have no pixel size in the data folder's CSV and are not scored: %s",
            len(no_px),
            ", ".join(no_px[:10]),
        )
    return [c for c in cases if c.pixel_size_mm is not None], no_px


def _write_results(
    out: Path,
    rows: list[CaseMetrics],
    measurements: dict[str, Measurement],
    cases: list[Case],
    skipped: dict[str, list[str]],
    record: dict[str, Any],
    title: str,
    command: str | None,
) -> dict[str, Any]:
    import json

    from fetalhead.write.overlay import draw_overlay, encode_png

    if not rows:
        raise ValueError("no image could be scored (see the warnings above)")
    summary = {**summarise(rows), "skipped": skipped}
    by_name = {c.image.name: c for c in cases}
    for w in summary["worst"]:
        case = by_name[w["filename"]]
        atomic_write_bytes(
            out / "worst" / f"{case.image.stem}_overlay.png",
            encode_png(
                draw_overlay(
                    read_gray(case.image), measurements[case.image.name], label_ellipse(case)
                )
            ),
        )
    with atomic_writer(out / "metrics.csv") as fh:
        names = list(asdict(rows[0]).keys())
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow([getattr(r, n) if getattr(r, n) is not None else "" for n in names])
    with atomic_writer(out / "summary.json") as fh:
        json.dump({**record, **summary}, fh, indent=2)
    with atomic_writer(out / "summary.md") as fh:
        fh.write(markdown_summary(summary, title, command))
    return summary


def evaluate(
    measurer: HeadMeasurer,
    data: str | Path,
    out_dir: str | Path,
    split: SplitName = "val",
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate a measurer on a labelled folder and write CSV + Markdown.

    Args:
        measurer: The model to evaluate.
        data: Labelled folder (HC18 or mask layout, with pixel sizes).
        out_dir: Where ``metrics.csv``, ``summary.md``, ``summary.json`` and the
            worst five overlays (reference ellipse in red) go.
        split: ``val`` evaluates the validation files recorded in the
            checkpoint; ``all`` evaluates every labelled image.
        progress: Show a progress bar.
        command: The command line, recorded in the summary.

    Returns:
        The summary dictionary. Images without a pixel size are not scored (a
        warning names them, and the summary lists them under ``skipped``).

    """
    from tqdm import tqdm

    val_files = measurer.checkpoint.meta.get("split", {}).get("val_files")
    cases, no_px = _labelled_cases(data, split, val_files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[CaseMetrics] = []
    measurements: dict[str, Measurement] = {}
    for case in tqdm(cases, desc="evaluating", disable=not progress):
        img = read_gray(case.image)
        m = measurer.measure(img, case.pixel_size_mm, filename=case.image.name)
        rows.append(evaluate_case(case, m, img.shape))
        measurements[case.image.name] = m
    return _write_results(
        out,
        rows,
        measurements,
        cases,
        {"no_pixel_size": no_px},
        {"split": split, "model": measurer.describe()},
        f"Evaluation on {data} ({split})",
        command,
    )


def evaluate_predictions(
    predictions: str | Path,
    data: str | Path,
    out_dir: str | Path,
    command: str | None = None,
) -> dict[str, Any]:
    """Score an existing ``predictions.csv`` against a labelled folder, without a model.

    As nnU-Net's ``compute_metrics_on_folder``: any run (another machine's, an
    older version's, a merged one) can be scored the same way. Rows are matched
    to labelled images by file name; the ellipse is rebuilt from its HC18
    parameters with the labelled image's own pixel size, and a row whose pixel
    size disagrees with the label's is an error.

    Returns:
        The summary. Labelled images without a row are listed under
        ``skipped["no_prediction"]``; rows without a label are ignored (logged).

    """
    from fetalhead.write.tables import read_predictions

    rows_in = read_predictions(Path(predictions))
    if not rows_in:
        raise ValueError(f"{predictions}: no rows")
    by_name: dict[str, dict[str, str]] = {}
    for r in rows_in:
        by_name.setdefault(Path(r["filename"]).name, r)
    cases, no_px = _labelled_cases(data, "all", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[CaseMetrics] = []
    measurements: dict[str, Measurement] = {}
    missing = []
    for case in cases:
        r = by_name.get(case.image.name)
        if r is None:
            missing.append(case.image.name)
            continue
        m = Measurement.from_row(r)
        if m.pixel_size_mm is not None and not math.isclose(
            m.pixel_size_mm, case.pixel_size_mm or 0.0, rel_tol=1e-4
        ):
            raise ValueError(
                f"{case.image.name}: predictions used {m.pixel_size_mm} mm pixels, the labels "
                f"{case.pixel_size_mm} mm"
            )
        m.pixel_size_mm = case.pixel_size_mm
        shape = read_gray(case.image).shape
        rows.append(evaluate_case(case, m, shape))
        measurements[case.image.name] = m
    if missing:
        logger.warning("%d labelled images have no prediction row: %s", len(missing), missing[:10])
    unlabelled = set(by_name) - {c.image.name for c in cases}
    if unlabelled:
        logger.info("%d prediction rows have no label and are not scored", len(unlabelled))
    return _write_results(
        out,
        rows,
        measurements,
        cases,
        {"no_pixel_size": no_px, "no_prediction": missing},
        {"split": "all", "predictions": str(predictions)},
        f"Evaluation of {predictions} on {data}",
        command,
    )
