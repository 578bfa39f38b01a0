"""K-fold cross-validation by scan prefix: train each fold, save its held-out maps.

For each fold K this trains ``fetalhead train --folds N --fold K`` (resumable: a
fold that has ``final.pt`` is skipped, one with ``last.pt`` is resumed), then runs
the fold's last-epoch weights (``final.pt``, never selected on the held-out fold)
in float32 on the held-out images, with and without a left-right flip, and saves
the network-resolution probability maps to ``RUN/foldK/heldout_maps.npz``. Every
post-processing choice (TTA, ellipse weighting, qc thresholds, interval
calibration) is then scored from these maps without retraining:
``benchmarks/cv_report.py``.

A recipe with ``ema_decay`` also leaves each fold's moving average of the weights
(``final_ema.pt``); its held-out maps go to ``RUN_ema/foldK/heldout_maps.npz``, with
the fold's ``log.csv`` and ``config.json`` copied beside them, so that
``benchmarks/compare_recipes.py`` pairs the average against the last weights of the
same runs (``--base RUN --variant ema=RUN_ema``).

Usage::

    python scripts/cross_validate.py ../shared/data/hc18/training_set --out runs/cv5 \
        --config configs/cv5_resunet16.yaml --folds 5
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from fetalhead.data import find_cases, kfold_by_prefix
from fetalhead.infer.backends import preprocess
from fetalhead.model import Checkpoint
from fetalhead.readers import read_gray
from fetalhead.training import TrainConfig, train

logger = logging.getLogger("cross_validate")


def heldout_maps(ckpt_path: Path, data: str, folds: int, fold: int, seed: int, out: Path) -> None:
    """Save float16 probability maps (plain and flipped back) of the held-out fold."""
    ckpt = Checkpoint.load(ckpt_path)
    model = ckpt.build().eval()
    _, val = kfold_by_prefix(find_cases(data), folds, fold, seed)
    names, plain, flipped = [], [], []
    with torch.inference_mode():
        for i in range(0, len(val), 8):
            chunk = val[i : i + 8]
            pre = [preprocess(read_gray(c.image), ckpt.config) for c in chunk]
            t = torch.from_numpy(np.stack([x for x, _ in pre]))[:, None]
            mm = None
            if ckpt.config.scale_input:
                if any(c.pixel_size_mm is None for c in chunk):
                    raise ValueError(f"{chunk[0].image.parent}: this network needs pixel sizes")
                pairs = zip(chunk, pre, strict=True)
                mm = torch.tensor([lb.mm_per_pixel(c.pixel_size_mm) for c, (_, lb) in pairs])
            p = torch.sigmoid(model(t, mm))[:, 0]
            pf = torch.sigmoid(model(t.flip(-1), mm))[:, 0].flip(-1)
            names += [c.image.name for c in chunk]
            plain.append(p.numpy().astype(np.float16))
            flipped.append(pf.numpy().astype(np.float16))
    np.savez_compressed(
        out,
        names=np.array(names),
        plain=np.concatenate(plain),
        flipped=np.concatenate(flipped),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*", help="run only these folds")
    ap.add_argument("--epochs", type=int)
    ap.add_argument(
        "--init-from",
        type=Path,
        help="fine-tune each fold K from INIT_FROM/foldK/final.pt (a second training stage)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    for k in args.only if args.only else range(args.folds):
        run = Path(args.out) / f"fold{k}"
        cfg = TrainConfig.from_file(
            args.config,
            data=args.data,
            out=str(run),
            folds=args.folds,
            fold=k,
            epochs=args.epochs,
            progress=False,
            init_weights=str(args.init_from / f"fold{k}" / "final.pt") if args.init_from else None,
        )
        t0 = time.perf_counter()
        if not (run / "final.pt").exists():
            train(cfg, resume=(run / "last.pt").exists())
        maps = run / "heldout_maps.npz"
        if not maps.exists():
            heldout_maps(run / "final.pt", args.data, args.folds, k, cfg.effective_split_seed, maps)
        ema = Path(f"{args.out}_ema") / f"fold{k}"
        if (run / "final_ema.pt").exists() and not (ema / "heldout_maps.npz").exists():
            ema.mkdir(parents=True, exist_ok=True)
            for name in ("log.csv", "config.json"):
                shutil.copy(run / name, ema / name)
            heldout_maps(
                run / "final_ema.pt", args.data, args.folds, k, cfg.effective_split_seed,
                ema / "heldout_maps.npz",
            )  # fmt: skip
        logger.info("fold %d done in %.0f s", k, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
