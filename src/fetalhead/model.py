"""Residual U-Net and self-describing checkpoints.

The architecture follows the reference Keras design: four encoder levels and
a bridge, each a 3x3 convolution followed by two residual blocks
(BN-ReLU-conv-BN-ReLU-conv + identity, the second block ending with BN-ReLU);
max-pool then dropout on the way down (half the ratio after level 1); stride-2
3x3 transposed convolutions, skip concatenation, dropout at the two deepest
decoder levels, a 3x3 convolution and two residual blocks on the way up; and a
1x1 output convolution. The network returns logits; apply a sigmoid for the
probability of "head".
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fetalhead.write.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fetalhead-checkpoint/1"

#: mm per network pixel whose :func:`scale_code` is 0 (HC18's median pixel size,
#: 0.135 mm, letterboxed from 800x540 into 288x192).
REFERENCE_MM_PER_PIXEL = 0.38


def scale_code(mm_per_pixel: torch.Tensor) -> torch.Tensor:
    """The scale input of a network: ``ln(mm per network pixel / 0.38)``, shape ``(N, 1)``.

    Raises:
        ValueError: If a value is not a positive finite number.

    """
    v = torch.as_tensor(mm_per_pixel, dtype=torch.float32).reshape(-1, 1)
    if not torch.jit.is_tracing() and not bool(torch.all(torch.isfinite(v) & (v > 0))):
        raise ValueError(f"mm per pixel must be positive and finite, got {v.flatten().tolist()}")
    return torch.log(v / REFERENCE_MM_PER_PIXEL)


def parse_hw(text: str) -> tuple[int, int]:
    """A network input size from ``"H"`` (square) or ``"HxW"``, e.g. ``"192x288"``.

    Raises:
        ValueError: If ``text`` is neither.

    """
    parts = text.lower().split("x")
    try:
        if len(parts) > 2:
            raise ValueError
        return int(parts[0]), int(parts[-1])
    except ValueError:
        raise ValueError(f"expected H or HxW, got {text!r}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and input description of a Res-U-Net.

    Attributes:
        start_filters: Filters at the first level; doubled at each level.
        depth: Number of encoder levels (the bridge comes after them).
        dropout: Dropout ratio (half of it after the first level).
        input_hw: Network input ``(height, width)``; both divisible by ``2**depth``.
        keep_aspect: Letterbox inputs (True) or squash them (False, as the reference).
        normalisation: How pixels are scaled; only ``"divide_255"`` ([0, 1]).
        deep_supervision: In training, also predict the head from the coarser decoder
            levels (a 1x1 convolution each, upsampled), whose losses are added with
            weights 1/2, 1/4, 1/8 from fine to coarse. In evaluation the network
            returns the full-resolution output only, as without it.
        scale_input: The network is also told the physical size of its input pixels
            (mm per network pixel, :func:`scale_code`): each encoder level and the
            bridge add a learned per-channel offset, linear in the code, to the
            output of their first convolution. HC18 heads fill about the same
            number of pixels at every gestation, so without it the network cannot
            tell a large head imaged with large pixels from a small one. On folds
            0-1 it did not lower the over-estimate of large heads and cost 0.40 mm
            of ADF (``benchmarks/README.md``), so the shipped weights do without.

    """

    start_filters: int = 16
    depth: int = 4
    dropout: float = 0.5
    input_hw: tuple[int, int] = (224, 224)
    keep_aspect: bool = True
    normalisation: str = "divide_255"
    deep_supervision: bool = False
    scale_input: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        m = 2**self.depth
        if any(v % m for v in self.input_hw):
            raise ValueError(f"input_hw {self.input_hw} must be divisible by {m} (2**depth)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.start_filters < 1:
            raise ValueError(f"start_filters must be positive, got {self.start_filters}")
        if self.normalisation != "divide_255":
            raise ValueError(f"unknown normalisation {self.normalisation!r}; use 'divide_255'")


class ResidualBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus identity, optionally ending in BN-ReLU."""

    def __init__(self, channels: int, end_activation: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),  # on the BatchNorm output, not on x
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.post: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            if end_activation
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(x + self.body(x))


class Level(nn.Sequential):
    """A 3x3 convolution followed by two residual blocks."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            ResidualBlock(out_ch),
            ResidualBlock(out_ch, end_activation=True),
        )

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The two residual blocks, i.e. the level after its first convolution."""
        return self[2](self[1](x))


class ResUNet(nn.Module):
    """Residual U-Net for binary segmentation of the foetal head."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        f, d, p = self.config.start_filters, self.config.depth, self.config.dropout
        widths = [f * 2**i for i in range(d + 1)]
        self.down = nn.ModuleList()
        self.drop_down = nn.ModuleList()
        in_ch = 1
        for i in range(d):
            self.down.append(Level(in_ch, widths[i]))
            self.drop_down.append(nn.Dropout(p / 2 if i == 0 else p))
            in_ch = widths[i]
        self.pool = nn.MaxPool2d(2)
        self.bridge = Level(widths[d - 1], widths[d])
        self.up = nn.ModuleList()
        self.drop_up = nn.ModuleList()
        self.up_levels = nn.ModuleList()
        for i in reversed(range(d)):
            self.up.append(
                nn.ConvTranspose2d(
                    widths[i + 1], widths[i], 3, stride=2, padding=1, output_padding=1
                )
            )
            # Dropout only at the two deepest decoder levels.
            self.drop_up.append(nn.Dropout(p) if i >= d - 2 else nn.Identity())
            self.up_levels.append(Level(2 * widths[i], widths[i]))
        self.head = nn.Conv2d(widths[0], 1, 1)
        # Deep supervision: one 1x1 head per decoder level but the last (coarse to fine).
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(widths[i], 1, 1) for i in reversed(range(1, d))
        ) if self.config.deep_supervision else None  # fmt: skip
        # Scale input: one offset per channel, linear in the scale code, for each encoder
        # level and the bridge; zero at the start, so training begins from the plain net.
        self.scale_offsets: nn.ModuleList | None = None
        if self.config.scale_input:
            self.scale_offsets = nn.ModuleList(nn.Linear(1, w) for w in widths)
            for lin in self.scale_offsets:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(
        self, x: torch.Tensor, mm_per_pixel: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Map ``(N, 1, H, W)`` images in [0, 1] to ``(N, 1, H, W)`` logits.

        Args:
            x: The images.
            mm_per_pixel: ``(N,)`` mm per network pixel; required with
                ``config.scale_input``, ignored without it.

        In training with ``deep_supervision``, returns ``(logits, aux)``, ``aux`` the
        coarser levels' logits upsampled to ``(N, 1, H, W)``, finest first.

        """
        code = self._code(x, mm_per_pixel)
        return self._levels(self._offset(self.down[0][0](x), code, 0), code, aux=self.training)

    def _code(self, x: torch.Tensor, mm_per_pixel: torch.Tensor | None) -> torch.Tensor | None:
        if self.scale_offsets is None:
            return None
        if mm_per_pixel is None:
            raise ValueError("this network takes the pixel size: pass mm_per_pixel")
        code = scale_code(mm_per_pixel).to(x.device)
        if code.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {code.shape[0]} pixel sizes")
        return code

    def _offset(self, h: torch.Tensor, code: torch.Tensor | None, i: int) -> torch.Tensor:
        """``h`` plus level ``i``'s scale offset (``h`` itself without a scale input)."""
        if code is None or self.scale_offsets is None:
            return h
        return h + self.scale_offsets[i](code.to(h.dtype))[:, :, None, None]

    def forward_bf16(
        self, x: torch.Tensor, mm_per_pixel: torch.Tensor | None = None
    ) -> torch.Tensor:
        """As :meth:`forward`, with the convolutions after the first one in bfloat16.

        For inference on CPUs with fast bfloat16 (AVX512-BF16, AMX). The first
        convolution sees the image itself (rounding intensities ``k / 255`` to
        bfloat16's 8-bit mantissa is what moves HC most), so it runs in float32;
        it has one input channel, so this costs little. Its output stays float32
        through the first level's residual additions, which also feed the skip
        connection to the last decoder level: rounding that stream was what still
        moved HC by more than 0.1 mm on a few images. Every later convolution,
        and every level that starts with one, runs in bfloat16 under autocast.
        Returns float32 logits.
        """
        device = x.device.type
        code = self._code(x, mm_per_pixel)
        with torch.autocast(device, enabled=False):
            stem = self._offset(self.down[0][0](x.float()), code, 0)
        with torch.autocast(device, dtype=torch.bfloat16):
            return self._levels(stem, code).float()

    def _levels(
        self, x: torch.Tensor, code: torch.Tensor | None = None, aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The network after the first convolution (whose output, offset, ``x`` is)."""
        size = x.shape[-2:]
        skips = []
        for i, (level, drop) in enumerate(zip(self.down, self.drop_down, strict=True)):
            x = level.blocks(x if i == 0 else self._offset(level[0](x), code, i))
            skips.append(x)
            x = drop(self.pool(x))
        x = self.bridge.blocks(self._offset(self.bridge[0](x), code, len(self.down)))
        decoded = []
        for up, drop, level, skip in zip(
            self.up, self.drop_up, self.up_levels, reversed(skips), strict=True
        ):
            x = level(drop(torch.cat([up(x), skip], dim=1)))
            decoded.append(x)
        if not (aux and self.aux_heads is not None):
            return self.head(x)
        coarse = [
            nn.functional.interpolate(h(d), size=size, mode="bilinear", align_corners=False)
            for h, d in zip(self.aux_heads, decoded[:-1], strict=True)
        ]
        return self.head(x), coarse[::-1]


@torch.no_grad()
def fold_batchnorm(model: ResUNet) -> ResUNet:
    """Fold each residual block's middle BatchNorm into the convolution before it.

    For inference (eval mode) only: the result computes the same function
    with one memory pass fewer per block. The other BatchNorms follow an
    addition or feed the identity path, so they cannot be folded.

    Returns:
        ``model``, changed in place.

    """
    if model.training:
        raise ValueError("fold_batchnorm is for inference: call model.eval() first")
    for block in model.modules():
        if not isinstance(block, ResidualBlock) or not isinstance(block.body[3], nn.BatchNorm2d):
            continue
        conv, bn = block.body[2], block.body[3]
        if not isinstance(conv, nn.Conv2d) or bn.running_var is None or bn.running_mean is None:
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        block.body[3] = nn.Identity()
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass
class Checkpoint:
    """A model with everything needed to use and trust it.

    Attributes:
        config: Architecture and input description.
        state_dict: Weights.
        meta: Training-data note, recipe, metrics and anything else worth keeping.

    """

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ResUNet:
        """Instantiate the model in eval mode with these weights."""
        model = ResUNet(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["input_hw"] = list(cfg["input_hw"])
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfg,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()},
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        """Save atomically with :func:`torch.save`."""
        buf = io.BytesIO()
        torch.save(self.to_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def from_model(cls, model: nn.Module, meta: dict[str, Any] | None = None) -> Checkpoint:
        """Snapshot a (possibly DDP-wrapped) model."""
        inner = model.module if hasattr(model, "module") else model
        return cls(inner.config, dict(inner.state_dict()), dict(meta or {}))

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Load safely (``weights_only=True``: no code is unpickled).

        Raises:
            ValueError: If the file is not a fetalhead checkpoint.

        """
        try:
            obj = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # torch raises many types for corrupt files
            raise ValueError(f"{path}: not a readable fetalhead checkpoint ({exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a fetalhead checkpoint (missing format tag)")
        cfg = dict(obj["config"])
        cfg["input_hw"] = tuple(cfg["input_hw"])
        return cls(ModelConfig(**cfg), obj["state_dict"], dict(obj.get("meta", {})))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
