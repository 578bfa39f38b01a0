"""Inference backends: a float32 batch in [0, 1] -> head probability maps.

``make_backend`` is the one place where a backend name becomes a backend:
``auto`` resolves to ``torch-bf16`` on CPUs with native bfloat16, else ONNX
Runtime when installed, else PyTorch.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from numpy.typing import NDArray

from fetalhead.geometry.letterbox import Letterbox
from fetalhead.infer.hardware import bf16_supported, native_bf16
from fetalhead.model import Checkpoint, ModelConfig, fold_batchnorm

logger = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "torch-bf16", "onnx"]
BACKENDS: tuple[str, ...] = get_args(BackendName)


class Backend(Protocol):
    """Maps a float32 ``(N, 1, H, W)`` batch in [0, 1] to ``(N, H, W)`` probabilities.

    A backend of a network with a scale input (``ModelConfig.scale_input``) also
    takes the ``(N,)`` mm per network pixel as a second argument; the others are
    called with the batch alone.
    """

    def __call__(self, batch: NDArray[np.float32], /) -> NDArray[np.float32]: ...


class TorchBackend:
    """PyTorch inference in eval mode, with foldable BatchNorms folded, under ``inference_mode``.

    Args:
        checkpoint: Model to run.
        device: Torch device.
        channels_last: Use the NHWC memory format (faster convolutions on CPU).
        bf16: Run the network in bfloat16 after its first convolution (see
            :meth:`fetalhead.model.ResUNet.forward_bf16`); fast on CPUs with native
            bfloat16 (AVX512-BF16, AMX).
        compile: Compile the network with ``torch.compile`` (inductor, frozen
            weights). The first batch pays a one-off compilation (4-18 s on two
            cores), so it pays off on large folders only. Smaller batches are
            zero-padded to the first batch's size so that nothing recompiles; if
            compilation fails (no C++ compiler, for example), it warns and runs eagerly.

    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str = "cpu",
        channels_last: bool = True,
        bf16: bool = False,
        compile: bool = False,
    ):
        self.device = torch.device(device)
        self.model = fold_batchnorm(checkpoint.build()).to(self.device)
        self.channels_last = channels_last
        self.name = ("torch-bf16" if bf16 else "torch") + ("+compile" if compile else "")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward = self.model.forward_bf16 if bf16 else self.model.forward
        self._compiled: Any = (
            torch.compile(self._forward, dynamic=False, options={"freezing": True})
            if compile
            else None
        )
        self._compiled_batch = 0

    def __call__(
        self, batch: NDArray[np.float32], mm_per_pixel: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            mm = None if mm_per_pixel is None else torch.as_tensor(mm_per_pixel).float()
            logits = (
                self._run_compiled(x, mm) if self._compiled is not None else self._forward(x, mm)
            )
            return torch.sigmoid(logits)[:, 0].float().cpu().numpy()

    def _run_compiled(self, x: torch.Tensor, mm: torch.Tensor | None) -> torch.Tensor:
        n = len(x)
        self._compiled_batch = max(self._compiled_batch, n)
        if n < self._compiled_batch:
            pad = x.new_zeros((self._compiled_batch - n, *x.shape[1:]))
            x = torch.cat([x, pad])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if mm is not None:
                mm = torch.cat([mm, mm.new_full((self._compiled_batch - n,), mm[0].item())])
        try:
            return self._compiled(x, mm)[:n]
        except Exception as exc:  # inductor raises many types (compiler missing, ...)
            logger.warning("torch.compile failed, running eagerly instead: %s", exc)
            self._compiled = None
            return self._forward(x, mm)[:n]


def preprocess(
    image: NDArray[np.uint8], config: ModelConfig
) -> tuple[NDArray[np.float32], Letterbox]:
    """Letterbox (or squash) a grayscale image to the network input, scaled to [0, 1]."""
    h, w = config.input_hw
    lb = Letterbox(image.shape[0], image.shape[1], h, w, config.keep_aspect)
    return lb.apply(image).astype(np.float32) * (1.0 / 255.0), lb


def float32_backend() -> BackendName:
    """The fastest float32 backend installed: ``onnx`` if ONNX Runtime is, else ``torch``.

    For evaluations, whose numbers should not depend on the CPU they ran on.
    """
    from fetalhead.infer.onnx import onnx_available

    return "onnx" if onnx_available() else "torch"


def make_backend(checkpoint: Checkpoint, name: BackendName, compile: bool = False) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "auto":
        name = "torch-bf16" if native_bf16() else "torch" if compile else float32_backend()
    if name == "onnx":
        from fetalhead.infer.onnx import OnnxBackend, onnx_available

        if compile:
            raise ValueError("compile applies to the torch backends, not to onnx")
        if not onnx_available():
            raise RuntimeError("the onnx backend needs ONNX Runtime: pip install 'fetalhead[onnx]'")
        return OnnxBackend.from_checkpoint(checkpoint)
    if name == "torch-bf16" and not bf16_supported():
        raise RuntimeError(
            "the torch-bf16 backend needs a CPU with bfloat16 support in oneDNN "
            "(AVX-512); use --backend torch or onnx"
        )
    return TorchBackend(checkpoint, bf16=name == "torch-bf16", compile=compile)
