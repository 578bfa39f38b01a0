"""Training the Res-U-Net: resumable, deterministic on CPU, DDP-ready.

Run it as ``fetalhead train DATA --out RUN`` or under
``torchrun --nproc_per_node=N -m fetalhead.cli train ...``. Only rank 0
writes files; metrics are reduced across ranks.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from numpy.typing import NDArray
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from fetalhead.data import CachedCases, Case, find_cases, kfold_by_prefix, split_by_prefix
from fetalhead.geometry.ellipse import find_head_contour, fit_ellipse
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.infer.hardware import native_bf16
from fetalhead.model import Checkpoint, ModelConfig, ResUNet
from fetalhead.write.atomic import atomic_write_bytes, atomic_writer

logger = logging.getLogger(__name__)

LossName = Literal["dice", "dice_bce"]
DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "float32", "bfloat16"]


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        data: Labelled folder (HC18 or simple-mask layout).
        out: Run folder for checkpoints, logs and curves.
        epochs: Number of epochs.
        batch_size: Images per step (per process under DDP).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps before cosine decay.
        image_h: Network input height.
        image_w: Network input width.
        keep_aspect: Letterbox (True) or squash (False) images into the input.
        start_filters: Filters at the first U-Net level.
        dropout: Dropout ratio of the U-Net.
        loss: ``dice`` (smooth = 1) or ``dice_bce``.
        val_fraction: Fraction of scan prefixes held out for validation (ignored
            when ``folds`` is set).
        folds: Cross-validation by scan prefix: number of folds (``None``: one
            ``val_fraction`` split).
        fold: Which fold (0-based) is validated on when ``folds`` is set.
        precision: ``float32``; ``bfloat16`` (autocast, channels_last on CPU); or
            ``auto``: bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX) and
            float16 mixed precision on CUDA, else float32.
        seed: Seed of split, initialisation, shuffling and augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.
        augment: Use on-the-fly augmentation.
        max_images: Use only the first N cases (for tests and smoke runs).
        num_threads: Torch CPU threads (``None``: all cores).
        progress: Show progress bars.
        data_note: Free text about the data, stored in the checkpoint.
        balance_trimesters: Draw each epoch's images with replacement, weighted by the
            inverse square root of their trimester's share (trimester from the reference
            HC by Hadlock), so that the rarer large third-trimester heads are seen more
            often. Off: every image once per epoch.
        init_weights: Start from this checkpoint's weights (fine-tuning). Its
            architecture must match, and it must have been trained with the same
            validation files, so that no validation image was ever trained on.

    """

    data: str = ""
    out: str = "runs/default"
    epochs: int = 13
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    image_h: int = 192
    image_w: int = 288
    keep_aspect: bool = True
    start_filters: int = 16
    dropout: float = 0.5
    loss: LossName = "dice_bce"
    val_fraction: float = 0.15
    folds: int | None = None
    fold: int | None = None
    precision: PrecisionName = "auto"
    seed: int = 42
    device: DeviceName = "auto"
    augment: bool = True
    max_images: int | None = None
    num_threads: int | None = None
    progress: bool = True
    data_note: str = ""
    balance_trimesters: bool = False
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("dice", "dice_bce"):
            raise ValueError(f"loss must be 'dice' or 'dice_bce', got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("epochs", "batch_size", "image_h", "image_w", "start_filters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                f"precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}"
            )
        if (self.folds is None) != (self.fold is None):
            raise ValueError("folds and fold go together: give both (e.g. --folds 5 --fold 0)")
        if self.folds is not None and not (self.folds >= 2 and 0 <= int(self.fold) < self.folds):
            raise ValueError(
                f"need folds >= 2 and 0 <= fold < folds, got folds={self.folds}, fold={self.fold}"
            )

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(
            start_filters=self.start_filters,
            dropout=self.dropout,
            input_hw=(self.image_h, self.image_w),
            keep_aspect=self.keep_aspect,
        )

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a YAML or TOML file, then apply non-``None`` overrides."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{p}: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss with ``smooth`` added to numerator and denominator, per image."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - ((2.0 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of ``logits > 0`` against ``target > 0.5``."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2.0 * inter / denom.clamp(min=1), torch.ones_like(denom))


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: LossName) -> torch.Tensor:
    loss = dice_loss(logits, target)
    if kind == "dice_bce":
        loss = loss + F.binary_cross_entropy_with_logits(logits, target)
    return loss


def build_augmentation(seed: int) -> A.Compose:
    """Flips, small rotations/scales/shifts, and gamma/contrast changes."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Affine(
                scale=(0.85, 1.15),
                rotate=(-20, 20),
                translate_percent=(-0.06, 0.06),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                p=0.7,
            ),
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=0.5),
        ],
        seed=seed,
    )


def trimester_weights(cases: list[Case]) -> NDArray[np.float64]:
    """Per-case sampling weight, the inverse square root of its trimester's share.

    Cases without a reference HC get weight 1 (as if their trimester were typical).
    """
    labels = [
        trimester(hadlock_1984(c.hc_mm).weeks) if c.hc_mm and c.hc_mm > 0 else None for c in cases
    ]
    known = [t for t in labels if t is not None]
    share = {t: known.count(t) / len(known) for t in set(known)}
    w = np.array([1.0 if t is None else share[t] ** -0.5 for t in labels])
    return w / w.mean()


class WeightedEpochSampler(Sampler[int]):
    """Each epoch, draw indices with replacement in proportion to ``weights``.

    The draw depends only on (seed, epoch), so all ranks draw the same list and rank
    ``r`` of ``world`` takes every ``world``-th index from ``r``: equal step counts,
    no overlap, and an exactly repeatable (resumable) run.
    """

    def __init__(self, weights: NDArray[np.float64], seed: int, rank: int, world: int) -> None:
        self.p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.total = math.ceil(len(self.p) / world) * world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.choice(len(self.p), size=self.total, replace=True, p=self.p)
        return iter(idx[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.total // self.world


class HeadDataset(Dataset):
    """Cached letterboxed images with soft targets and optional augmentation."""

    def __init__(self, cache: CachedCases, augment: A.Compose | None) -> None:
        self.cache = cache
        self.augment = augment

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, target = self.cache.images[i], self.cache.targets[i]
        if self.augment is not None:
            out = self.augment(image=img, mask=target)
            img, target = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / 255.0)[None]
        y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
        return x, y


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return info


def _resolve_device(name: DeviceName) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was requested but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if info.world > 1:
        dist.all_reduce(t)
    return t.tolist()


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_dice: float
    val_loss: float
    val_dice: float
    val_adf_mm: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """Where a run left its outputs and how it ended."""

    run_dir: Path
    best_val_dice: float
    history: list[EpochLog] = field(default_factory=list)


def _val_hc_errors(
    probs: np.ndarray, cases: list[Case], cfg: TrainConfig, shapes: list[tuple[int, int]]
) -> list[float]:
    """Absolute HC error (mm) from the low-resolution probability maps."""
    errs = []
    for prob, case, shape in zip(probs, cases, shapes, strict=True):
        if case.pixel_size_mm is None or case.hc_mm is None:
            continue
        lb = Letterbox(shape[0], shape[1], cfg.image_h, cfg.image_w, cfg.keep_aspect)
        found = find_head_contour(prob)
        if found is None or len(found[0]) < 5:
            errs.append(case.hc_mm)
            continue
        e = fit_ellipse(lb.to_original(found[0])).ellipse
        errs.append(abs(e.perimeter * case.pixel_size_mm - case.hc_mm))
    return errs


def resolve_precision(name: PrecisionName, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or ``None`` for plain float32."""
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bf16() else None


def _plot_curves(history: list[EpochLog], path: Path) -> None:
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


def _write_log(history: list[EpochLog], path: Path) -> None:
    with atomic_writer(path) as fh:
        w = csv.writer(fh)
        names = [f.name for f in dataclasses.fields(EpochLog)]
        w.writerow(names)
        for h in history:
            w.writerow([getattr(h, n) for n in names])


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a Res-U-Net as ``cfg`` says, resuming from ``out/last.pt`` if asked.

    Returns:
        The run folder, best validation Dice and per-epoch history.

    """
    device = _resolve_device(cfg.device)
    info = _setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.out)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and last_path.exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or pick another --out"
            )
    if resume and not last_path.exists():
        raise FileNotFoundError(f"{last_path}: nothing to resume")

    cases = find_cases(cfg.data)
    if cfg.max_images:
        cases = cases[: cfg.max_images]
    if cfg.folds is not None and cfg.fold is not None:
        train_cases, val_cases = kfold_by_prefix(cases, cfg.folds, cfg.fold, cfg.seed)
    else:
        train_cases, val_cases = split_by_prefix(cases, cfg.val_fraction, cfg.seed)
    if not train_cases:
        raise ValueError(f"{cfg.data}: no training cases after the split")
    logger.info("%d train / %d val cases (split by scan prefix)", len(train_cases), len(val_cases))
    hw = (cfg.image_h, cfg.image_w)
    train_cache = CachedCases(train_cases, hw, cfg.keep_aspect)
    val_cache = CachedCases(val_cases, hw, cfg.keep_aspect)

    _seed_all(cfg.seed)
    model = ResUNet(cfg.model_config).to(device)
    augment = build_augmentation(cfg.seed) if cfg.augment else None
    train_ds = HeadDataset(train_cache, augment)
    val_ds = HeadDataset(val_cache, None)
    sampler: DistributedSampler | WeightedEpochSampler
    if cfg.balance_trimesters:
        sampler = WeightedEpochSampler(
            trimester_weights(train_cases), cfg.seed, info.rank, info.world
        )
    else:
        sampler = DistributedSampler(
            train_ds,
            num_replicas=info.world,
            rank=info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=False,
        )
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=0)
    # Each rank validates its own share of the cases, each case exactly once.
    val_idx = list(range(info.rank, len(val_cases), info.world))

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * len(loader))
    warm = min(cfg.warmup_steps, total // 4)

    def lr_lambda(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    amp_dtype = resolve_precision(cfg.precision, device)
    use_amp = amp_dtype is not None
    # Float16 needs loss scaling; bfloat16 has float32's exponent range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cpu" and amp_dtype == torch.bfloat16:
        model = model.to(memory_format=torch.channels_last)
    logger.info("precision: %s", "float32" if amp_dtype is None else str(amp_dtype))
    ddp_model: torch.nn.Module = model
    if info.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    start_epoch, best, history = 1, -1.0, []
    if resume:
        state = torch.load(last_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best = float(state["best_val_dice"])
        history = [EpochLog(**h) for h in state["history"]]
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed %s at epoch %d", run_dir, start_epoch)
    elif cfg.init_weights:
        _init_from(model, cfg.init_weights, [c.image.name for c in val_cases])
    if not resume and info.main:
        cfg_dump = asdict(cfg)
        with atomic_writer(run_dir / "config.json") as fh:
            json.dump(cfg_dump, fh, indent=2)
        _write_yaml(cfg_dump, run_dir / "config.yaml")

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        # Everything random in an epoch is seeded from (seed, epoch, rank), so a
        # resumed run repeats exactly what an uninterrupted one would have done.
        _seed_all(cfg.seed * 1000 + epoch * 17 + info.rank)
        if augment is not None:
            augment.set_random_seed(cfg.seed * 1000 + epoch * 17 + info.rank)
        sampler.set_epoch(epoch)
        ddp_model.train()
        sums = [0.0, 0.0, 0.0]  # loss*n, dice sum, n
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and info.main),
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device.type == "cpu" and use_amp:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                logits = ddp_model(x)
            loss = compute_loss(logits.float(), y, cfg.loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            with torch.no_grad():
                d = hard_dice(logits.float(), y)
            sums[0] += loss.item() * len(x)
            sums[1] += float(d.sum())
            sums[2] += len(x)
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", dice=f"{sums[1] / sums[2]:.4f}")
        tr_loss_sum, tr_dice_sum, tr_n = _all_sum(sums, info, device)

        model.eval()
        v = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss*n, dice sum, n, adf sum, adf n
        with torch.inference_mode():
            for j in range(0, len(val_idx), cfg.batch_size):
                idx = val_idx[j : j + cfg.batch_size]
                x, y = (t.to(device) for t in default_collate([val_ds[i] for i in idx]))
                logits = model(x).float()
                v[0] += float(compute_loss(logits, y, cfg.loss)) * len(idx)
                v[1] += float(hard_dice(logits, y).sum())
                v[2] += len(idx)
                probs = torch.sigmoid(logits)[:, 0].cpu().numpy()
                errs = _val_hc_errors(
                    probs, [val_cases[i] for i in idx], cfg, [val_cache.shapes[i] for i in idx]
                )
                v[3] += sum(errs)
                v[4] += len(errs)
        vl, vd, vn, adf_sum, adf_n = _all_sum(v, info, device)
        log = EpochLog(
            epoch=epoch,
            train_loss=tr_loss_sum / max(tr_n, 1),
            train_dice=tr_dice_sum / max(tr_n, 1),
            val_loss=vl / vn if vn else float("nan"),
            val_dice=vd / vn if vn else float("nan"),
            val_adf_mm=adf_sum / adf_n if adf_n else float("nan"),
            lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
        )
        history.append(log)
        score = log.val_dice if vn else -log.train_loss
        improved = score > best
        best = max(best, score)
        if info.main:
            logger.info(
                "epoch %d: train loss %.4f dice %.4f | val loss %.4f dice %.4f "
                "ADF %.2f mm | %.0f s",
                epoch,
                log.train_loss,
                log.train_dice,
                log.val_loss,
                log.val_dice,
                log.val_adf_mm,
                log.seconds,
            )
            meta = {
                "data_note": cfg.data_note or f"trained on {cfg.data}",
                "split": {
                    "method": "by 3-digit scan prefix"
                    + (f", fold {cfg.fold} of {cfg.folds}" if cfg.folds else ""),
                    "val_fraction": None if cfg.folds else cfg.val_fraction,
                    "folds": cfg.folds,
                    "fold": cfg.fold,
                    "seed": cfg.seed,
                    "n_train": len(train_cases),
                    "n_val": len(val_cases),
                    "val_files": [c.image.name for c in val_cases],
                },
                "recipe": asdict(cfg),
                "epoch": epoch,
                "metrics": asdict(log),
            }
            if improved:
                Checkpoint.from_model(model, meta).save(best_path)
            if epoch == cfg.epochs:
                # The last epoch's weights, chosen without looking at validation:
                # cross-validation scores these, so that no fold's score is selected on.
                Checkpoint.from_model(model, meta).save(run_dir / "final.pt")
            buf = io.BytesIO()
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "best_val_dice": best,
                    "history": [asdict(h) for h in history],
                    "torch_rng": torch.get_rng_state(),
                },
                buf,
            )
            atomic_write_bytes(last_path, buf.getvalue())
            _write_log(history, run_dir / "log.csv")
            _plot_curves(history, run_dir / "curves.png")
        if info.world > 1:
            _check_in_step(model, info, device)
            dist.barrier()
    return TrainResult(run_dir, best, history)


def _init_from(model: ResUNet, path: str, val_files: list[str]) -> None:
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


def _check_in_step(model: torch.nn.Module, info: DistInfo, device: torch.device) -> None:
    """Verify that every rank holds the same weights (DDP keeps them in step)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(info.world)]
    dist.all_gather(gathered, checksum.to(device))
    values = [float(g) for g in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"ranks diverged: parameter checksums {values}")
    if info.main:
        logger.info("ranks in step: %d ranks, parameter checksum %.6f", info.world, values[0])


def _write_yaml(values: dict[str, Any], path: Path) -> None:
    import yaml

    with atomic_writer(path) as fh:
        yaml.safe_dump(values, fh, sort_keys=False)
