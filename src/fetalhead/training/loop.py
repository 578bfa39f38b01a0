"""The training loop: resumable, deterministic on CPU, DDP-ready.

Run it as ``fetalhead train DATA --out RUN`` or under
``torchrun --nproc_per_node=N -m fetalhead.cli train ...``. Only rank 0
writes files; metrics are reduced across ranks. Validation measures HC with
the same post-processing as ``fetalhead predict`` (without TTA), so the logged
ADF is the one ``fetalhead evaluate --no-tta`` reports.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from torch.utils.data import DataLoader, default_collate
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from fetalhead.data import (
    CachedCases,
    Case,
    find_cases,
    kfold_by_prefix,
    label_ellipse,
    split_by_prefix,
)
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.postprocess import postprocess
from fetalhead.training.checkpoints import (
    EpochLog,
    init_from,
    load_state,
    plot_curves,
    save_state,
    weights_meta,
    write_config,
    write_log,
)
from fetalhead.training.config import DeviceName, TrainConfig, resolve_precision
from fetalhead.training.losses import compute_loss, hard_dice
from fetalhead.training.samples import (
    HeadDataset,
    WeightedEpochSampler,
    build_augmentation,
    trimester_weights,
)

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    """Where a run left its outputs and how it ended."""

    run_dir: Path
    best_val_dice: float  # NaN when the run had no validation split
    history: list[EpochLog] = field(default_factory=list)


def _setup_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


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


def split_cases(cfg: TrainConfig) -> tuple[list[Case], list[Case]]:
    """The run's training and validation cases (a k-fold fold or a prefix split)."""
    cases = find_cases(cfg.data)
    if cfg.max_images:
        cases = cases[: cfg.max_images]
    if cfg.folds is not None and cfg.fold is not None:
        return kfold_by_prefix(cases, cfg.folds, cfg.fold, cfg.effective_split_seed)
    return split_by_prefix(cases, cfg.val_fraction, cfg.effective_split_seed)


def reference_hc_mm(case: Case) -> float | None:
    """The reference HC as ``fetalhead evaluate`` takes it: the CSV's, else the label's."""
    if case.pixel_size_mm is None:
        return None
    return (
        case.hc_mm if case.hc_mm is not None else label_ellipse(case).perimeter * case.pixel_size_mm
    )


def val_hc_errors(
    probs: np.ndarray,
    refs: list[float | None],
    pixel_sizes: list[float | None],
    cfg: TrainConfig,
    shapes: list[tuple[int, int]],
) -> list[float]:
    """Absolute HC errors (mm) of network-size maps, post-processed as ``predict`` does.

    As in ``fetalhead evaluate``, images without a pixel size are not scored and
    images where no head is found have no ADF (they lower the Dice instead).
    """
    errs = []
    for prob, ref, px, shape in zip(probs, refs, pixel_sizes, shapes, strict=True):
        if ref is None or px is None:
            continue
        lb = Letterbox(shape[0], shape[1], cfg.image_h, cfg.image_w, cfg.keep_aspect)
        e, _, _, _ = postprocess(prob, lb, "full")
        if e is not None:
            errs.append(abs(e.perimeter * px - ref))
    return errs


@dataclass
class _Run:
    """Everything a run holds between epochs."""

    cfg: TrainConfig
    device: torch.device
    info: DistInfo
    model: ResUNet
    ddp_model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    loader: DataLoader
    sampler: DistributedSampler | WeightedEpochSampler
    augment: object | None
    train_cases: list[Case]
    val_cases: list[Case]
    val_ds: HeadDataset
    val_cache: CachedCases
    val_refs: list[float | None]
    train_cache: CachedCases
    ema: AveragedModel | None = None


def _measure_bn(run: _Run, ema: AveragedModel) -> None:
    """Measure the averaged weights' BatchNorm statistics on the training images.

    One pass in training mode over the images without augmentation, in float32 (as
    inference runs), each BatchNorm's statistics the plain mean over the pass.
    """
    plain = HeadDataset(run.train_cache, None)
    update_bn(DataLoader(plain, batch_size=run.cfg.batch_size), ema.module, run.device)
    ema.module.eval()


def _prepare(cfg: TrainConfig, device: torch.device, info: DistInfo) -> _Run:
    train_cases, val_cases = split_cases(cfg)
    if not train_cases:
        raise ValueError(f"{cfg.data}: no training cases after the split")
    logger.info("%d train / %d val cases (split by scan prefix)", len(train_cases), len(val_cases))
    hw = (cfg.image_h, cfg.image_w)
    train_cache = CachedCases(
        train_cases, hw, cfg.keep_aspect, cfg.crop_fraction > 0, cfg.negative_fraction > 0
    )
    val_cache = CachedCases(val_cases, hw, cfg.keep_aspect)

    _seed_all(cfg.seed)
    model = ResUNet(cfg.model_config).to(device)
    missing = next((c for c in train_cases + val_cases if c.pixel_size_mm is None), None)
    if cfg.scale_input and missing is not None:
        raise ValueError(f"scale_input needs every pixel size; {missing.image} has none")
    augment = (
        build_augmentation(cfg.seed, cfg.scale_range, record=cfg.scale_input)
        if cfg.augment
        else None
    )
    train_ds = HeadDataset(
        train_cache, augment, cfg.crop_fraction, negative_fraction=cfg.negative_fraction
    )
    sampler: DistributedSampler | WeightedEpochSampler
    if cfg.balance_trimesters:
        sampler = WeightedEpochSampler(
            trimester_weights(train_cases), cfg.seed, info.rank, info.world
        )
    else:
        sampler = DistributedSampler(
            train_ds, num_replicas=info.world, rank=info.rank, shuffle=True, seed=cfg.seed
        )
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=0)
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
    # Float16 needs loss scaling; bfloat16 has float32's exponent range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cpu" and amp_dtype == torch.bfloat16:
        model = model.to(memory_format=torch.channels_last)
    logger.info("precision: %s", "float32" if amp_dtype is None else str(amp_dtype))
    ema = None
    if cfg.ema_decay is not None:
        # Weights only: BatchNorm statistics averaged over steps do not fit averaged
        # weights (HC came out 11 mm small that way); they are measured again at the end.
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    ddp_model: torch.nn.Module = model
    if info.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return _Run(
        cfg, device, info, model, ddp_model, opt, sched, scaler, amp_dtype, loader, sampler,
        augment, train_cases, val_cases, HeadDataset(val_cache, None), val_cache,
        [reference_hc_mm(c) for c in val_cases], train_cache, ema,
    )  # fmt: skip


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float, float]:
    """One pass over the training sampler; returns (loss sum, Dice sum, images)."""
    cfg, device, info = run.cfg, run.device, run.info
    # Everything random in an epoch is seeded from (seed, epoch, rank), so a
    # resumed run repeats exactly what an uninterrupted one would have done.
    _seed_all(cfg.seed * 1000 + epoch * 17 + info.rank)
    if run.augment is not None:
        run.augment.set_random_seed(cfg.seed * 1000 + epoch * 17 + info.rank)  # type: ignore[attr-defined]
    run.sampler.set_epoch(epoch)
    run.ddp_model.train()
    sums = [0.0, 0.0, 0.0]
    use_amp = run.amp_dtype is not None
    bar = tqdm(
        run.loader,
        desc=f"epoch {epoch}/{cfg.epochs}",
        disable=not (cfg.progress and info.main),
        leave=False,
    )
    for x, mm, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cpu" and use_amp:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=use_amp):
            out = run.ddp_model(x, mm)  # a network without a scale input ignores mm
        logits, aux = out if isinstance(out, tuple) else (out, [])
        loss = compute_loss(logits.float(), y, cfg.loss)
        for k, a in enumerate(aux):  # deep supervision, weights 1/2, 1/4, 1/8
            loss = loss + 0.5 ** (k + 1) * compute_loss(a.float(), y, cfg.loss)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        with torch.no_grad():
            d = hard_dice(logits.float(), y)
        sums[0] += loss.item() * len(x)
        sums[1] += float(d.sum())
        sums[2] += len(x)
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", dice=f"{sums[1] / sums[2]:.4f}")
    tr_loss, tr_dice, tr_n = _all_sum(sums, info, device)
    return tr_loss, tr_dice, tr_n


def _validate(run: _Run) -> tuple[float, float, float, float, float]:
    """Loss, Dice and HC error sums over this rank's share of the validation cases."""
    cfg, device = run.cfg, run.device
    val_idx = list(range(run.info.rank, len(run.val_cases), run.info.world))
    run.model.eval()
    v = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss*n, dice sum, n, adf sum, adf n
    with torch.inference_mode():
        for j in range(0, len(val_idx), cfg.batch_size):
            idx = val_idx[j : j + cfg.batch_size]
            x, mm, y = (t.to(device) for t in default_collate([run.val_ds[i] for i in idx]))
            logits = run.model(x, mm).float()
            v[0] += float(compute_loss(logits, y, cfg.loss)) * len(idx)
            v[1] += float(hard_dice(logits, y).sum())
            v[2] += len(idx)
            probs = torch.sigmoid(logits)[:, 0].cpu().numpy()
            errs = val_hc_errors(
                probs,
                [run.val_refs[i] for i in idx],
                [run.val_cases[i].pixel_size_mm for i in idx],
                cfg,
                [run.val_cache.shapes[i] for i in idx],
            )
            v[3] += sum(errs)
            v[4] += len(errs)
    vl, vd, vn, adf, adf_n = _all_sum(v, run.info, device)
    return vl, vd, vn, adf, adf_n


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
    run = _prepare(cfg, device, info)

    start_epoch, best, history = 1, -1.0, []
    if resume:
        state = load_state(last_path, device)
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best = float(state["best_val_dice"])
        history = [EpochLog(**h) for h in state["history"]]
        if run.ema is not None:
            if "ema" not in state:
                raise ValueError(
                    f"{last_path} was trained without ema_decay, so it holds no weight average "
                    "to resume; resume without ema_decay or start a new run"
                )
            run.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed %s at epoch %d", run_dir, start_epoch)
    elif cfg.init_weights:
        init_from(run.model, cfg.init_weights, [c.image.name for c in run.val_cases])
    if not resume and info.main:
        write_config(cfg, run_dir)

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        tr_loss, tr_dice, tr_n = _train_epoch(run, epoch)
        vl, vd, vn, adf_sum, adf_n = _validate(run)
        log = EpochLog(
            epoch=epoch,
            train_loss=tr_loss / max(tr_n, 1),
            train_dice=tr_dice / max(tr_n, 1),
            val_loss=vl / vn if vn else float("nan"),
            val_dice=vd / vn if vn else float("nan"),
            val_adf_mm=adf_sum / adf_n if adf_n else float("nan"),
            lr=run.opt.param_groups[0]["lr"],
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
                epoch, log.train_loss, log.train_dice, log.val_loss, log.val_dice,
                log.val_adf_mm, log.seconds,
            )  # fmt: skip
            meta = weights_meta(cfg, run.train_cases, run.val_cases, log)
            if improved:
                Checkpoint.from_model(run.model, meta).save(best_path)
            if epoch == cfg.epochs:
                # The last epoch's weights, chosen without looking at validation:
                # cross-validation scores these, so that no fold's score is selected on.
                Checkpoint.from_model(run.model, meta).save(run_dir / "final.pt")
                if run.ema is not None:
                    _measure_bn(run, run.ema)
                    averaged = {
                        "ema_decay": cfg.ema_decay,
                        "metrics": "of the last weights, not of this average",
                    }
                    Checkpoint.from_model(run.ema.module, {**meta, "averaged": averaged}).save(
                        run_dir / "final_ema.pt"
                    )
            save_state(
                last_path,
                {
                    "model": run.model.state_dict(),
                    "optimizer": run.opt.state_dict(),
                    "scheduler": run.sched.state_dict(),
                    "scaler": run.scaler.state_dict(),
                    "epoch": epoch,
                    "best_val_dice": best,
                    "history": [asdict(h) for h in history],
                    "torch_rng": torch.get_rng_state(),
                    **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
                },
            )
            write_log(history, run_dir / "log.csv")
            plot_curves(history, run_dir / "curves.png")
        if info.world > 1:
            _check_in_step(run.model, info, device)
            dist.barrier()
    # Without a validation split the score tracked was -train_loss, not a Dice.
    return TrainResult(run_dir, best if run.val_cases else float("nan"), history)


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
