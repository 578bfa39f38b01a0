"""Monte Carlo dropout on the held-out heads: does the HC's spread mark the large errors?

Each fold's last weights (``RUN/foldK/final.pt`` of ``scripts/cross_validate.py``) measure
their held-out images as ``fetalhead predict`` does (float32, boundary level by HC band,
the full-resolution fit), once as shipped (dropout off) and ``--passes`` more times with
the network's dropout layers sampling (Gal and Ghahramani 2016), each pass with its own
seed. Per image it writes the plain HC, the HC of each dropout pass, the HC of the mean
of the dropout maps, and

- ``mc_rel``: the SD of the dropout passes' HCs / the plain HC, the disagreement that
  ``benchmarks/flag_inputs.py --extra-rows`` judges as a qc-flag input;
- ``mc_shift_rel``: |mean of the dropout passes' HCs - the plain HC| / the plain HC.

It then reports, paired on the same images (95 % bootstrap intervals over scan
prefixes), the ADF of the plain pass and of the mean dropout map, and the network time
of one pass. The plain pass is checked against ``--reference``, the committed rows of
the same folds (their HC at P = 0.55 and 0.6).

Usage::

    python benchmarks/mc_dropout.py ../shared/data/hc18/training_set --runs runs/cv5_s2 \
        --passes 8 --out benchmarks/results/mc_dropout \
        --reference benchmarks/results/shipped_cv5/per_image.csv
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from cv_report import TRIMESTERS, case_row, cluster_bootstrap, fmt, held_out_cases
from scale_passes import banded_hc, check_reference, write_run

from fetalhead.geometry.letterbox import Letterbox
from fetalhead.model import Checkpoint
from fetalhead.postprocess import postprocess
from fetalhead.readers import read_gray


def sample_dropout(model: torch.nn.Module, on: bool) -> None:
    """Switch only the dropout layers of an evaluating model to sampling (``on``) or off."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train(on)


def fold_rows(
    fold_dir: Path,
    ckpt: Checkpoint,
    data: str,
    passes: int,
    seconds: list[float],
    limit: int | None,
) -> list[dict]:
    """Per held-out image of one fold (the first ``limit``): plain HC and the dropout passes'."""
    fold, held_out = held_out_cases(fold_dir, data)
    model = ckpt.build().eval()
    rows = []
    with torch.inference_mode():
        for i, case in enumerate(held_out[:limit]):
            img = read_gray(case.image)
            h, w = img.shape
            px = case.pixel_size_mm
            lb = Letterbox(h, w, *ckpt.config.input_hw, keep_aspect=True)
            x = torch.from_numpy(lb.apply(img).astype(np.float32) / 255.0)[None, None]
            sample_dropout(model, False)
            t0 = time.perf_counter()
            plain = torch.sigmoid(model(x, None))[0, 0].numpy()
            seconds.append(time.perf_counter() - t0)
            row = case_row(case, fold) | {"hc_plain_mm": banded_hc(plain, lb, px)}
            sample_dropout(model, True)
            maps = []
            for k in range(passes):
                torch.manual_seed(1000 * fold + 7919 * i + k)
                prob = torch.sigmoid(model(x, None))[0, 0].numpy()
                maps.append(prob)
                row[f"hc_mc{k}_mm"] = banded_hc(prob, lb, px)
            row["hc_mcmean_mm"] = banded_hc(np.mean(maps, axis=0), lb, px)
            hcs = np.array([row[f"hc_mc{k}_mm"] for k in range(passes)])
            base = row["hc_plain_mm"]
            found = hcs[np.isfinite(hcs)]
            row["mc_found"] = len(found)
            row["mc_rel"] = float(found.std(ddof=1) / base) if len(found) > 1 else math.nan
            row["mc_shift_rel"] = float(abs(found.mean() - base) / base) if len(found) else math.nan
            # The plain pass at P = 0.55 and 0.6, as the committed rows keep them.
            full = cv2.resize(lb.crop(plain), (w, h), interpolation=cv2.INTER_LINEAR)
            same = Letterbox(h, w, h, w, keep_aspect=True)
            for level in (0.55, 0.6):
                e = postprocess(full, same, "full", level=level)[0]
                row[f"own_level{level:g}_hc_mm"] = e.perimeter * px if e is not None else math.nan
            rows.append(row)
    return rows


def report(rows: list[dict]) -> str:
    """ADF of the plain pass and of the mean dropout map, paired, and how mc_rel tracks |DF|."""
    keep = [r for r in rows if math.isfinite(r["hc_plain_mm"]) and math.isfinite(r["hc_mcmean_mm"])]
    g = np.array([r["prefix"] for r in keep])
    tri = np.array([r["trimester"] for r in keep])
    ref = np.array([r["hc_ref_mm"] for r in keep])
    plain = np.abs(np.array([r["hc_plain_mm"] for r in keep]) - ref)
    mean = np.abs(np.array([r["hc_mcmean_mm"] for r in keep]) - ref)
    lines = [
        f"{len(keep)} of {len(rows)} images with a head found by the plain pass and the mean map.",
        "",
        "| HC from | ADF (mm) | paired change against plain (mm) | "
        + " | ".join(f"{t} ADF" for t in TRIMESTERS)
        + " |",
        "|---|---|---|" + "---|" * len(TRIMESTERS),
    ]
    for name, adf in (("plain (shipped)", plain), ("mean of the dropout maps", mean)):
        per_tri = " | ".join(
            f"{adf[tri == t].mean():.2f}" if (tri == t).any() else "-" for t in TRIMESTERS
        )
        lines.append(
            f"| {name} | {fmt(cluster_bootstrap(adf, g))} | "
            f"{fmt(cluster_bootstrap(adf - plain, g), sign=True)} | {per_tri} |"
        )
    rel = np.array([r["mc_rel"] for r in keep])
    ok = np.isfinite(rel)
    large = plain > 5.0

    def median(sel: np.ndarray) -> float:
        return float(np.median(rel[sel])) if sel.any() else math.nan

    lines += [
        "",
        f"mc_rel (SD of the dropout passes' HC / plain HC): median {median(ok):.4f}; "
        f"median where |DF| > 5 mm ({(large & ok).sum()} images) {median(ok & large):.4f}, "
        f"elsewhere {median(ok & ~large):.4f}. Spearman rank correlation with |DF|: "
        f"{spearman(rel[ok], plain[ok]):.2f}.",
    ]
    return "\n".join(lines)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected in continuous values)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--reference", type=Path, help="committed per_image.csv of the same recipe")
    ap.add_argument("--folds", type=int, nargs="*", help="only these folds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="only the first N held-out images of each fold")
    args = ap.parse_args()
    if args.passes < 2:
        ap.error("--passes must be at least 2 (an SD needs two passes)")
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    seconds: list[float] = []
    for fold_dir in sorted(args.runs.glob("fold*")):
        fold = int(fold_dir.name.removeprefix("fold"))
        if (fold_dir / "final.pt").exists() and (not args.folds or fold in args.folds):
            ckpt = Checkpoint.load(fold_dir / "final.pt")
            rows += fold_rows(fold_dir, ckpt, args.data, args.passes, seconds, args.limit)
    if not rows:
        raise SystemExit(f"{args.runs}: no fold with final.pt")
    folds = sorted({r["fold"] for r in rows})
    text = [
        f"# Monte Carlo dropout on the held-out heads ({len(rows)} images, folds {folds}, "
        f"{args.passes} dropout passes)",
        "",
        "Boundary level by HC band (0.55 / 0.55 / 0.6), float32, full-resolution fit; 95 % "
        f"bootstrap intervals over scan prefixes. One network pass: "
        f"{1000 * float(np.median(seconds)):.0f} ms (median, {args.threads} threads).",
        "",
        report(rows),
    ]
    if args.reference:
        text += ["", check_reference(rows, args.reference)]
    write_run(args.out, rows, text)


if __name__ == "__main__":
    main()
