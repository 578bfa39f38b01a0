"""HC errors of a model on the images it was trained on, as rows that bias_by_scale.py reads.

Does a bias seen on held-out images also show on the training images? If it does, the
network does not fit those images' boundaries (a fitting problem); if it does not, the
bias is a gap between training and new images. This script runs a checkpoint in float32
on its own training images (the other folds of ``--fold``, or the training side of the
``val_fraction`` split the shipped weights were trained on), fits the ellipse at one
boundary level and writes ``filename, fold, prefix, hc_ref_mm, levelP_df_mm`` per image,
in the layout of ``cv_report.py``'s ``per_image.csv``.

Usage::

    python benchmarks/train_fit_rows.py ../shared/data/hc18/training_set \
        --weights runs/cv5_scale/fold0/final.pt --fold 0 --out /tmp/train_rows.csv
    python benchmarks/bias_by_scale.py /tmp/train_rows.csv \
        --pixel-sizes ../shared/data/hc18/training_set_pixel_size_and_HC.csv --column level0.6_df_mm
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from fetalhead.data import find_cases, kfold_by_prefix, split_by_prefix
from fetalhead.infer.backends import preprocess
from fetalhead.model import Checkpoint
from fetalhead.postprocess import postprocess
from fetalhead.readers import read_gray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--weights", required=True, type=Path)
    side = ap.add_mutually_exclusive_group(required=True)
    side.add_argument("--fold", type=int, help="the fold the weights held out (of --folds)")
    side.add_argument("--val-fraction", type=float, help="the weights' prefix split")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="the split's seed")
    ap.add_argument("--level", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = Checkpoint.load(args.weights)
    model = ck.build().eval()
    cases = find_cases(args.data)
    if args.fold is not None:
        train, _ = kfold_by_prefix(cases, args.folds, args.fold, args.seed)
    else:
        train, _ = split_by_prefix(cases, args.val_fraction, args.seed)
    column = f"level{args.level:g}_df_mm"
    rows = []
    with torch.inference_mode():
        for c in train:
            if c.pixel_size_mm is None or c.hc_mm is None:
                continue
            x, lb = preprocess(read_gray(c.image), ck.config)
            mm = torch.tensor([lb.mm_per_pixel(c.pixel_size_mm)]) if ck.config.scale_input else None
            prob = torch.sigmoid(model(torch.from_numpy(x)[None, None], mm))[0, 0].numpy()
            e = postprocess(prob, lb, "full", level=args.level)[0]
            df = e.perimeter * c.pixel_size_mm - c.hc_mm if e is not None else float("nan")
            rows.append({"filename": c.image.name, "fold": -1 if args.fold is None else args.fold,
                         "prefix": c.prefix, "hc_ref_mm": c.hc_mm, column: df})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    found = np.isfinite([r[column] for r in rows])
    print(f"{args.out}: {len(rows)} training images of {args.weights}, {found.sum()} with a head")


if __name__ == "__main__":
    main()
