"""What a training run writes: resumable state, weights with their description, logs."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fetalhead.data import Case
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.training.config import TrainConfig
from fetalhead.write.atomic import atomic_write_bytes, atomic_writer

logger = logging.getLogger(__name__)


@dataclass
class EpochLog:
    """Metrics of one epoch (validation ADF from the same post-processing as predict)."""

    epoch: int
    train_loss: float
    train_dice: float
    val_loss: float
    val_dice: float
    val_adf_mm: float
    lr: float
    seconds: float


def weights_meta(
    cfg: TrainConfig, train_cases: list[Case], val_cases: list[Case], log: EpochLog
) -> dict[str, Any]:
    """The description saved with the weights: data, split, recipe and metrics."""
    return {
        "data_note": cfg.data_note or f"trained on {cfg.data}",
        "split": {
            "method": "by 3-digit scan prefix"
            + (f", fold {cfg.fold} of {cfg.folds}" if cfg.folds else ""),
            "val_fraction": None if cfg.folds else cfg.val_fraction,
            "folds": cfg.folds,
            "fold": cfg.fold,
            "seed": cfg.effective_split_seed,
            "n_train": len(train_cases),
            "n_val": len(val_cases),
            "val_files": [c.image.name for c in val_cases],
        },
        "recipe": asdict(cfg),
        "epoch": log.epoch,
        "metrics": asdict(log),
    }


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically save the resumable training state (``last.pt``)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Load a resumable training state saved by :func:`save_state`."""
    return torch.load(path, map_location=device, weights_only=True)


def init_from(model: ResUNet, path: str, val_files: list[str]) -> None:
    """Load fine-tuning start weights, refusing ones that saw this run's validation set."""
    ckpt = Checkpoint.load(path)
    # Dropout only acts in training, so a fine-tune may change it.
    if dataclasses.replace(ckpt.config, dropout=model.config.dropout) != model.config:
        raise ValueError(
            f"{path}: architecture {ckpt.config} does not match this run's {model.config}"
        )
    seen = ckpt.meta.get("split", {}).get("val_files")
    if seen is None or sorted(seen) != sorted(val_files):
        raise ValueError(
            f"{path}: its validation files differ from this run's (or are not recorded), so "
            "fine-tuning from it could train on images this run validates on; use the same "
            "data, val_fraction and seed as the run that produced it"
        )
    model.load_state_dict(ckpt.state_dict)
    logger.info("initialised from %s (same validation split)", path)


def write_log(history: list[EpochLog], path: Path) -> None:
    """Write the per-epoch metrics as CSV."""
    with atomic_writer(path) as fh:
        w = csv.writer(fh)
        names = [f.name for f in dataclasses.fields(EpochLog)]
        w.writerow(names)
        for h in history:
            w.writerow([getattr(h, n) for n in names])


def plot_curves(history: list[EpochLog], path: Path) -> None:
    """Plot loss and Dice curves to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h.epoch for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(ep, [h.train_loss for h in history], label="train")
    axes[0].plot(ep, [h.val_loss for h in history], label="val")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
    axes[1].plot(ep, [h.train_dice for h in history], label="train")
    axes[1].plot(ep, [h.val_dice for h in history], label="val")
    axes[1].set(xlabel="epoch", ylabel="Dice", title="Dice")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_config(cfg: TrainConfig, run_dir: Path) -> None:
    """Save the run's configuration as JSON (read by ``--resume``) and YAML."""
    import json

    import yaml

    values = asdict(cfg)
    with atomic_writer(run_dir / "config.json") as fh:
        json.dump(values, fh, indent=2)
    with atomic_writer(run_dir / "config.yaml") as fh:
        yaml.safe_dump(values, fh, sort_keys=False)


def average_checkpoints(checkpoints: list[Checkpoint], names: list[str]) -> Checkpoint:
    """The uniform average of the weights of runs of one architecture (a "model soup").

    Every floating tensor, BatchNorm statistics included, is the mean over the runs;
    integer tensors (BatchNorm's batch counters) are the first run's. It only makes
    sense for runs fine-tuned from the same start weights, which stay in one basin
    (Wortsman et al., ICML 2022); the meta is the first run's, with the sources named
    under ``meta["weight_average"]``.

    Args:
        checkpoints: Two or more checkpoints of the same architecture.
        names: What each came from (paths), recorded in the meta.

    Raises:
        ValueError: If fewer than two are given, ``names`` does not match, or the
            architectures or tensor names differ.

    """
    if len(checkpoints) < 2 or len(names) != len(checkpoints):
        raise ValueError("give two or more checkpoints, each with a name")
    first = checkpoints[0]
    for c, name in zip(checkpoints[1:], names[1:], strict=True):
        if dataclasses.replace(c.config, dropout=first.config.dropout) != first.config:
            raise ValueError(f"{name}: architecture {c.config} differs from {first.config}")
        if c.state_dict.keys() != first.state_dict.keys():
            raise ValueError(f"{name}: its tensors differ from those of {names[0]}")
    state = {}
    for k, v in first.state_dict.items():
        if v.is_floating_point():
            mean = torch.stack([c.state_dict[k].float() for c in checkpoints]).mean(0)
            state[k] = mean.to(v.dtype)
        else:
            state[k] = v.clone()
    meta = dict(first.meta) | {"weight_average": {"sources": list(names), "n": len(names)}}
    return Checkpoint(first.config, state, meta)
