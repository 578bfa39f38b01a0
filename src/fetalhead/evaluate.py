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
from fetalhead.ellipse import Ellipse, ellipse_points, render_ellipse_mask
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.io import atomic_write_bytes, atomic_writer, read_gray
from fetalhead.predict import HeadMeasurer, Measurement

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
    """Compare one measurement with its reference ellipse."""
    px = case.pixel_size_mm or 1.0
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


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "median": math.nan, "p95": math.nan}
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
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
    }
    worst = sorted(rows, key=lambda r: -(r.adf_mm if r.adf_mm is not None else math.inf))[:5]
    summary["worst"] = [asdict(r) for r in worst]
    return summary


def markdown_summary(summary: dict[str, Any], title: str, command: str | None) -> str:
    """Render a summary as Markdown."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [
        f"Images: {summary['n_images']} (no head found: {summary['n_no_head']}). "
        "Metrics use the fitted ellipses, as HC18 does.",
        "",
        "| metric | mean | SD | median | 95th pct |",
        "|---|---|---|---|---|",
    ]
    for key, label, scale in (
        ("dsc", "DSC (%)", 100.0),
        ("hd_mm", "HD (mm)", 1.0),
        ("df_mm", "DF (mm)", 1.0),
        ("adf_mm", "ADF (mm)", 1.0),
    ):
        s = summary[key]
        lines.append(
            f"| {label} | {s['mean'] * scale:.2f} | {s['sd'] * scale:.2f} | "
            f"{s['median'] * scale:.2f} | {s['p95'] * scale:.2f} |"
        )
    lines += ["", "ADF by trimester (GA from the reference HC, Hadlock):", ""]
    lines += ["| trimester | n | mean ADF (mm) | SD | 95th pct |", "|---|---|---|---|---|"]
    for t, s in summary["adf_by_trimester"].items():
        lines.append(f"| {t} | {s['n']} | {s['mean']:.2f} | {s['sd']:.2f} | {s['p95']:.2f} |")
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
        The summary dictionary.

    """
    import json

    from tqdm import tqdm

    from fetalhead.overlay import draw_overlay, encode_png

    cases = find_cases(data)
    if split == "val":
        val_files = set(measurer.checkpoint.meta.get("split", {}).get("val_files", []))
        if not val_files:
            raise ValueError("the checkpoint records no validation files; use --split all")
        cases = [c for c in cases if c.image.name in val_files]
    elif split != "all":
        raise ValueError(f"split must be 'val' or 'all', got {split!r}")
    if not cases:
        raise ValueError(f"{data}: no labelled images to evaluate")
    missing = [c.image.name for c in cases if c.pixel_size_mm is None]
    if missing:
        raise ValueError(f"{missing[0]}: no pixel size in the data folder's CSV")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[CaseMetrics] = []
    measurements: dict[str, Measurement] = {}
    for case in tqdm(cases, desc="evaluating", disable=not progress):
        img = read_gray(case.image)
        m = measurer.measure(img, case.pixel_size_mm, filename=case.image.name)
        rows.append(evaluate_case(case, m, img.shape))
        measurements[case.image.name] = m
    summary = summarise(rows)
    for w in summary["worst"]:
        case = next(c for c in cases if c.image.name == w["filename"])
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
        json.dump({"split": split, "model": measurer.describe(), **summary}, fh, indent=2)
    with atomic_writer(out / "summary.md") as fh:
        fh.write(markdown_summary(summary, f"Evaluation on {data} ({split})", command))
    return summary
