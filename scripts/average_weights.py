"""Average the weights of runs fine-tuned from the same start (a uniform model soup).

Two modes:

- ``average_weights.py A.pt B.pt --out C.pt``: one averaged checkpoint;
- ``average_weights.py --folds RUN_A RUN_B --out RUN_AVG``: for each ``foldK`` that
  both cross-validation runs finished, average their ``final.pt`` into
  ``RUN_AVG/foldK/final.pt``, copy RUN_A's ``log.csv`` and ``config.json`` beside it
  and save the average's held-out maps (as ``scripts/cross_validate.py`` does), so that
  ``benchmarks/compare_recipes.py --base RUN_A --variant average=RUN_AVG`` pairs it
  with either run on the same images.

Usage::

    python scripts/average_weights.py --folds runs/cv5_s2 runs/cv5_s2_seed43 \
        --out runs/cv5_s2_avg --data ../shared/data/hc18/training_set
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cross_validate import heldout_maps

from fetalhead.model import Checkpoint
from fetalhead.training import TrainConfig
from fetalhead.training.checkpoints import average_checkpoints

logger = logging.getLogger("average_weights")


def average_files(paths: list[Path], out: Path) -> None:
    """Average the checkpoints at ``paths`` into ``out``."""
    avg = average_checkpoints([Checkpoint.load(p) for p in paths], [str(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    avg.save(out)
    logger.info("averaged %d checkpoints into %s", len(paths), out)


def average_folds(runs: list[Path], out: Path, data: str) -> None:
    """Average each fold's ``final.pt`` over ``runs`` and save the held-out maps."""
    for fold_dir in sorted(runs[0].glob("fold*")):
        finals = [r / fold_dir.name / "final.pt" for r in runs]
        if not all(p.exists() for p in finals):
            logger.info("%s: not finished in every run, skipped", fold_dir.name)
            continue
        dest = out / fold_dir.name
        if not (dest / "final.pt").exists():
            average_files(finals, dest / "final.pt")
        for name in ("log.csv", "config.json"):
            shutil.copy(fold_dir / name, dest / name)
        cfg = TrainConfig.from_file(fold_dir / "config.json")
        maps = dest / "heldout_maps.npz"
        if not maps.exists():
            heldout_maps(
                dest / "final.pt", data, cfg.folds, cfg.fold, cfg.effective_split_seed, maps
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", type=Path, help="checkpoints to average")
    ap.add_argument("--folds", nargs="+", type=Path, help="cross-validation runs to average")
    ap.add_argument("--data", help="the labelled folder the folds were drawn from (--folds)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.folds:
        if len(args.folds) < 2 or not args.data or args.inputs:
            ap.error("--folds takes two or more runs, with --data and no checkpoints")
        average_folds(args.folds, args.out, args.data)
    elif len(args.inputs) >= 2:
        average_files(args.inputs, args.out)
    else:
        ap.error("give two or more checkpoints, or --folds")


if __name__ == "__main__":
    main()
