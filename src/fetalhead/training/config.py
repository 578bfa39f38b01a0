"""Training configuration: a dataclass with checked options, loadable from YAML or TOML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from fetalhead.infer.hardware import native_bf16
from fetalhead.model import ModelConfig

LossName = Literal["dice", "dice_bce", "dice_bce_boundary", "dice_bce_distance", "bce"]

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
        loss: ``dice`` (smooth = 1), ``dice_bce``, ``dice_bce_boundary`` (Dice plus
            a cross-entropy that weighs the band of +-3 network pixels around the
            reference outline 5 times as much as the rest; see
            :func:`fetalhead.training.losses.boundary_weights`), ``dice_bce_distance``
            (Dice, cross-entropy and the boundary loss of Kervadec et al. 2019, which
            charges each head pixel its signed distance from the reference outline;
            see :func:`fetalhead.training.losses.distance_loss`), or ``bce``: the
            cross-entropy alone, whose optimum is the calibrated probability, with no
            soft-Dice term to shift an uncertain boundary.
        val_fraction: Fraction of scan prefixes held out for validation (ignored
            when ``folds`` is set).
        folds: Cross-validation by scan prefix: number of folds (``None``: one
            ``val_fraction`` split).
        fold: Which fold (0-based) is validated on when ``folds`` is set.
        precision: ``float32``; ``bfloat16`` (autocast, channels_last on CPU); or
            ``auto``: bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX) and
            float16 mixed precision on CUDA, else float32.
        seed: Seed of initialisation, shuffling and augmentation, and of the split
            unless ``split_seed`` is given.
        split_seed: Seed of the split (``None``: ``seed``). Another ``seed`` with the
            same ``split_seed`` trains the same recipe again on the same folds, which
            measures how much two runs of one recipe differ.
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
        deep_supervision: Add losses on the coarser decoder levels (see
            :class:`fetalhead.model.ModelConfig`).
        crop_fraction: Share of training samples that are a box around the reference
            head at a random margin (see :class:`fetalhead.training.samples.HeadDataset`),
            which teaches the network the second pass of a two-pass measurer
            (``refine``). 0: whole images only.
        negative_fraction: Share of training samples that are, where the image has one,
            a box of the scan clear of the reference head
            (:func:`fetalhead.geometry.crop.headless_box`) with an empty target: real
            ultrasound without a head, a hard negative. 0: none.
        scale_range: Range of the random zoom of the augmentation (applied to 70 % of
            samples with the rotation and shift); below 1 shrinks the head.
        init_weights: Start from this checkpoint's weights (fine-tuning). Its
            architecture must match, and it must have been trained with the same
            validation files, so that no validation image was ever trained on.
        ema_decay: Also keep an exponential moving average of the weights, updated
            after every step with this decay, and save it as ``final_ema.pt`` beside
            ``final.pt``, its BatchNorm statistics measured again on the training
            images (``None``: no average). The training itself, its validation and
            ``best.pt`` do not change.
        scale_input: Tell the network the mm per network pixel of each input (see
            :class:`fetalhead.model.ModelConfig`), which the random zoom changes with
            the image. Every training image needs a pixel size.

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
    split_seed: int | None = None
    device: DeviceName = "auto"
    augment: bool = True
    max_images: int | None = None
    num_threads: int | None = None
    progress: bool = True
    data_note: str = ""
    balance_trimesters: bool = False
    init_weights: str | None = None
    deep_supervision: bool = False
    crop_fraction: float = 0.0
    negative_fraction: float = 0.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    ema_decay: float | None = None
    scale_input: bool = False

    def __post_init__(self) -> None:
        if self.loss not in get_args(LossName):
            raise ValueError(f"loss must be one of {get_args(LossName)}, got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("epochs", "batch_size", "image_h", "image_w", "start_filters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        lo, hi = (float(v) for v in self.scale_range)
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}"
            )
        self.scale_range = (lo, hi)
        if not 0.0 <= self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in [0, 1], got {self.crop_fraction}")
        if not 0.0 <= self.negative_fraction < 1.0:
            raise ValueError(f"negative_fraction must be in [0, 1), got {self.negative_fraction}")
        if self.scale_input and (self.crop_fraction > 0 or self.negative_fraction > 0):
            raise ValueError(
                "scale_input with crop_fraction > 0 or negative_fraction > 0 is not supported"
            )
        if self.scale_input and self.ema_decay is not None:
            raise ValueError("scale_input with ema_decay is not supported")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
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
    def effective_split_seed(self) -> int:
        """The seed the split is drawn with: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(
            start_filters=self.start_filters,
            dropout=self.dropout,
            input_hw=(self.image_h, self.image_w),
            keep_aspect=self.keep_aspect,
            deep_supervision=self.deep_supervision,
            scale_input=self.scale_input,
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


def resolve_precision(name: PrecisionName, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or ``None`` for plain float32."""
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bf16() else None
