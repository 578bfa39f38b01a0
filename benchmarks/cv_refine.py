"""Two-pass measurement (find the head, then measure a crop around it) on held-out folds.

For each fold of a ``scripts/cross_validate.py`` run, the fold's last-epoch weights
(``final.pt``, never selected on the held-out fold) measure that fold's held-out
images as ``fetalhead predict --refine`` does: float32 PyTorch, no TTA, the boundary
at ``--boundary-level``, the non-head check off (so that only the geometry differs
from the one-pass rows of ``cv_report.py``). It writes ``per_image.csv`` in the
layout of ``cv_report.py`` (the ``plain_*`` columns hold the two-pass results), with
the first pass's HC beside it, for ``compare_recipes.py``:

    python benchmarks/cv_refine.py ../shared/data/hc18/training_set --runs runs/cv5_crop \
        --out benchmarks/results/refine
    python benchmarks/compare_recipes.py ../shared/data/hc18/training_set --base runs/cv5_crop \
        --variant two_pass=benchmarks/results/refine/per_image.csv --out ...
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch
from cv_report import case_row, held_out_cases, metric_columns

from fetalhead.data import label_ellipse
from fetalhead.model import Checkpoint
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray

COLUMNS = (
    "filename", "prefix", "fold", "hc_ref_mm", "trimester", "pass1_hc_mm", "refined",
    "plain_hc_mm", "plain_df_mm", "plain_dsc", "plain_hd_mm", "plain_qc",
)  # fmt: skip


def fold_rows(data: str, fold_dir: Path, level: float) -> list[dict]:
    """Two-pass and first-pass results of one fold's held-out images."""
    fold, held_out = held_out_cases(fold_dir, data)
    ckpt = Checkpoint.load(fold_dir / "final.pt")
    measurer = HeadMeasurer(ckpt, backend="torch", tta=False, reject_non_heads=False, refine=False)
    measurer.level = level
    rows = []
    for case in held_out:
        img = read_gray(case.image)
        px = case.pixel_size_mm
        m = measurer.measure_batch([img], [px], [case.image.name])[0]
        first = m.ellipse
        measurer.refine_in_place([img], [m])  # the second pass, on the first's result
        row = case_row(case, fold) | {
            "pass1_hc_mm": first.perimeter * px if first else math.nan,
            "refined": int(m.ellipse is not None and m.ellipse != first),
            "plain_qc": m.qc,
        }
        row |= metric_columns("plain", m.ellipse, case, label_ellipse(case), img.shape)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--boundary-level", type=float, default=0.6)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for fold_dir in sorted(args.runs.glob("fold*")):
        if (fold_dir / "final.pt").exists():
            rows += fold_rows(args.data, fold_dir, args.boundary_level)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "per_image.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    refined = sum(r["refined"] for r in rows)
    print(f"{len(rows)} held-out images, {refined} refined by the second pass")


if __name__ == "__main__":
    main()
