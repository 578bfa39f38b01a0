"""The held-out heads measured again at other input sizes: a flag input, or a better HC?

Each fold's last weights (``RUN/foldK/final.pt`` of ``scripts/cross_validate.py``) measure
their held-out images as ``fetalhead predict`` does (float32, boundary level by HC band,
the full-resolution fit), once at the network's own input size and once at each other
size given (the whole image letterboxed into that canvas, so the head spans more or
fewer network pixels). Per image it writes the banded HC of each pass, the HC of the
passes' maps averaged at the original resolution (a multi-scale ensemble), and
``scaleHxW_rel`` = |HC at HxW - HC at the own size| / HC at the own size, the
disagreement that ``benchmarks/flag_inputs.py --extra-rows`` judges as a qc-flag input.

It then reports, paired on the same images (95 % bootstrap intervals over scan
prefixes), the ADF of each pass and of the averages against the own-size pass, and the
network time of each size. The own-size pass is checked against ``--reference``, the
committed rows of the same folds (their HC at P = 0.55 and 0.6), so that the fold models
are known to be the ones that made the committed cross-validation.

Usage::

    python benchmarks/scale_passes.py ../shared/data/hc18/training_set --runs runs/cv5_s2 \
        --sizes 160x240 224x336 --out benchmarks/results/scale_passes \
        --reference benchmarks/results/shipped_cv5/per_image.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from cv_report import (
    SHIPPED_LEVELS,
    TRIMESTERS,
    case_row,
    cluster_bootstrap,
    fmt,
    held_out_cases,
    read_per_image_csv,
)

from fetalhead.geometry.letterbox import Letterbox
from fetalhead.model import Checkpoint
from fetalhead.postprocess import postprocess
from fetalhead.predict import fit_by_band
from fetalhead.readers import read_gray

#: The shipped levels by HC band (every fold of the shipped recipe chose them).
LEVELS = dict(zip(TRIMESTERS, SHIPPED_LEVELS, strict=True))
#: The single level for a map without a band (not used: every image has a pixel size).
FALLBACK_LEVEL = 0.6


def parse_size(text: str) -> tuple[int, int]:
    """``"160x240"`` -> ``(160, 240)``; both multiples of 16 (four poolings)."""
    h, w = (int(v) for v in text.lower().split("x"))
    if h % 16 or w % 16 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give HxW, both positive multiples of 16")
    return h, w


def tag(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def banded_hc(prob: np.ndarray, lb: Letterbox, px: float) -> float:
    """HC (mm) of a map as ``predict`` fits it (levels by band, full path), NaN without a head."""
    e = fit_by_band(prob, lb, "full", LEVELS, FALLBACK_LEVEL, px)[0]
    return e.perimeter * px if e is not None else math.nan


def fold_rows(
    fold_dir: Path,
    ckpt: Checkpoint,
    data: str,
    sizes: list[tuple[int, int]],
    seconds: dict,
    limit: int | None,
) -> list[dict]:
    """Per held-out image of one fold (the first ``limit``): HC of each pass and averaged maps."""
    fold, held_out = held_out_cases(fold_dir, data)
    model = ckpt.build().eval()
    own = ckpt.config.input_hw
    rows = []
    with torch.inference_mode():
        for case in held_out[:limit]:
            img = read_gray(case.image)
            h, w = img.shape
            px = case.pixel_size_mm
            row = case_row(case, fold)
            full_maps = {}
            for size in [own, *sizes]:
                lb = Letterbox(h, w, *size, keep_aspect=True)
                x = torch.from_numpy(lb.apply(img).astype(np.float32) / 255.0)[None, None]
                t0 = time.perf_counter()
                prob = torch.sigmoid(model(x, None))[0, 0].numpy()
                seconds[tag(size)] = seconds.get(tag(size), 0.0) + time.perf_counter() - t0
                row[f"hc_{tag(size)}_mm"] = banded_hc(prob, lb, px)
                full_maps[size] = cv2.resize(lb.crop(prob), (w, h), interpolation=cv2.INTER_LINEAR)
            same = Letterbox(h, w, h, w, keep_aspect=True)  # the identity: maps already full size
            base = row[f"hc_{tag(own)}_mm"]
            for size in sizes:
                avg = 0.5 * (full_maps[own] + full_maps[size])
                row[f"hc_avg_{tag(size)}_mm"] = banded_hc(avg, same, px)
                row[f"scale{tag(size)}_rel"] = abs(row[f"hc_{tag(size)}_mm"] - base) / base
            if len(sizes) > 1:
                avg = np.mean(list(full_maps.values()), axis=0)
                row["hc_avg_all_mm"] = banded_hc(avg, same, px)
            # The own-size pass at P = 0.55 and 0.6, as the committed rows keep them.
            for level in (0.55, 0.6):
                e = postprocess(full_maps[own], same, "full", level=level)[0]
                row[f"own_level{level:g}_hc_mm"] = e.perimeter * px if e is not None else math.nan
            rows.append(row)
    return rows


def check_reference(rows: list[dict], reference: Path) -> str:
    """How far the own-size pass lies from the committed rows of the same images."""
    ref = {r["filename"]: r for r in read_per_image_csv(reference)[0]}
    worst = 0.0
    for r in rows:
        c = ref[r["filename"]]
        for level in (0.55, 0.6):
            committed = c.get(f"level{level:g}_df_mm", math.nan) + c["hc_ref_mm"]
            mine = r[f"own_level{level:g}_hc_mm"]
            if math.isfinite(committed) and math.isfinite(mine):
                worst = max(worst, abs(mine - committed))
    return f"Own-size pass against {reference} (P = 0.55 and 0.6): max |dHC| = {worst:.2g} mm"


def write_run(out: Path, rows: list[dict], text: list[str]) -> None:
    """The rows as ``OUT/per_image.csv`` and ``text`` as ``OUT/report.md``, also printed."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "per_image.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "report.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def report(rows: list[dict], sizes: list[tuple[int, int]], own: tuple[int, int]) -> str:
    """ADF of each pass and average, paired with the own size, on the images all measured.

    An image where any pass found no head is left out of every row of the table (so
    that each row is judged on the same images); the count of such images is given
    per pass.
    """
    columns = [f"hc_{tag(s)}_mm" for s in [own, *sizes]] + [f"hc_avg_{tag(s)}_mm" for s in sizes]
    if len(sizes) > 1:
        columns.append("hc_avg_all_mm")
    hc = np.array([[r[c] for c in columns] for r in rows], dtype=float)
    common = np.isfinite(hc).all(axis=1)
    g = np.array([r["prefix"] for r in rows])[common]
    tri = np.array([r["trimester"] for r in rows])[common]
    adf = np.abs(hc[common] - np.array([r["hc_ref_mm"] for r in rows])[common, None])
    lines = [
        f"{common.sum()} of {len(rows)} images with a head found in every pass.",
        "",
        f"| HC from | no head | ADF (mm) | paired change against {tag(own)} (mm) | "
        + " | ".join(f"{t} ADF" for t in TRIMESTERS)
        + " |",
        "|---|---|---|---|" + "---|" * len(TRIMESTERS),
    ]
    for j, col in enumerate(columns):
        per_tri = " | ".join(
            f"{adf[tri == t, j].mean():.2f}" if (tri == t).any() else "-" for t in TRIMESTERS
        )
        lines.append(
            f"| {col.removeprefix('hc_').removesuffix('_mm')} | {(~np.isfinite(hc[:, j])).sum()} | "
            f"{fmt(cluster_bootstrap(adf[:, j], g))} | "
            f"{fmt(cluster_bootstrap(adf[:, j] - adf[:, 0], g), sign=True)} | {per_tri} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--sizes", nargs="+", type=parse_size, required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--reference", type=Path, help="committed per_image.csv of the same recipe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="only the first N held-out images of each fold")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    own = None
    for fold_dir in sorted(args.runs.glob("fold*")):
        if (fold_dir / "final.pt").exists():
            ckpt = Checkpoint.load(fold_dir / "final.pt")
            own = ckpt.config.input_hw
            rows += fold_rows(fold_dir, ckpt, args.data, args.sizes, seconds, args.limit)
    if not rows or own is None:
        raise SystemExit(f"{args.runs}: no fold with final.pt")
    folds = sorted({r["fold"] for r in rows})
    timing = ", ".join(f"{k} {1000 * v / len(rows):.0f} ms" for k, v in seconds.items())
    text = [
        f"# The held-out heads at other input sizes ({len(rows)} images, folds {folds})",
        "",
        "Boundary level by HC band (0.55 / 0.55 / 0.6), float32, full-resolution fit; "
        "means with 95 % bootstrap intervals over scan prefixes.",
        "",
        report(rows, args.sizes, own),
        "",
        f"Network time per image, float32, batch 1, {args.threads} threads: {timing}.",
    ]
    if args.reference:
        text += ["", check_reference(rows, args.reference)]
    write_run(args.out, rows, text)


if __name__ == "__main__":
    main()
