"""ONNX export and an ONNX Runtime inference backend (``pip install fetalhead[onnx]``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fetalhead.model import REFERENCE_MM_PER_PIXEL, Checkpoint
from fetalhead.write.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)


def onnx_available() -> bool:
    """True when both ``onnx`` and ``onnxruntime`` can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _metadata(checkpoint: Checkpoint) -> dict[str, str]:
    cfg = asdict(checkpoint.config)
    return {
        "fetalhead.architecture": "ResUNet",
        "fetalhead.config": json.dumps(cfg),
        "fetalhead.input_hw": json.dumps(list(checkpoint.config.input_hw)),
        "fetalhead.normalisation": checkpoint.config.normalisation,
        "fetalhead.output": "logits; apply a sigmoid for P(head)",
        "fetalhead.data_note": str(checkpoint.meta.get("data_note", "")),
    }


def export_onnx_bytes(checkpoint: Checkpoint, opset: int = 17) -> bytes:
    """Export a checkpoint to ONNX with a dynamic batch axis and embedded metadata."""
    import onnx

    model = checkpoint.build()
    h, w = checkpoint.config.input_hw
    args: tuple[torch.Tensor, ...] = (torch.zeros(1, 1, h, w),)
    names, axes = ["image"], {"image": {0: "batch"}, "logits": {0: "batch"}}
    if checkpoint.config.scale_input:
        args += (torch.full((1,), REFERENCE_MM_PER_PIXEL),)
        names.append("mm_per_pixel")
        axes["mm_per_pixel"] = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            buf,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in _metadata(checkpoint).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(checkpoint: Checkpoint, out: str | Path, opset: int = 17) -> float:
    """Export to ``out`` and return the max abs difference of logits vs PyTorch."""
    data = export_onnx_bytes(checkpoint, opset)
    atomic_write_bytes(out, data)
    return compare_with_torch(checkpoint, data)


def compare_with_torch(checkpoint: Checkpoint, onnx_bytes: bytes, n: int = 2) -> float:
    """Max abs difference of logits between ONNX Runtime and PyTorch on random inputs."""
    import onnxruntime as ort

    h, w = checkpoint.config.input_hw
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, h, w), dtype=np.float32)
    feed = {"image": x}
    mm = None
    if checkpoint.config.scale_input:
        feed["mm_per_pixel"] = rng.uniform(0.15, 0.9, n).astype(np.float32)
        mm = torch.from_numpy(feed["mm_per_pixel"])
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)[0]
    with torch.inference_mode():
        ref = checkpoint.build()(torch.from_numpy(x), mm).numpy()
    return float(np.abs(got - ref).max())


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The fetalhead metadata embedded in an exported ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fetalhead"


def _state_digest(checkpoint: Checkpoint) -> str:
    h = hashlib.sha256(json.dumps(asdict(checkpoint.config), sort_keys=True).encode())
    for k in sorted(checkpoint.state_dict):
        h.update(k.encode())
        h.update(checkpoint.state_dict[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


class OnnxBackend:
    """ONNX Runtime inference with full graph optimisation (BN folding, fusions)."""

    name = "onnx"

    def __init__(self, onnx_bytes: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads() or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, threads: int | None = None) -> OnnxBackend:
        """Export (or reuse a cached export of) a checkpoint and open a session."""
        path = _cache_dir() / f"resunet-{_state_digest(checkpoint)}.onnx"
        if path.exists():
            data = path.read_bytes()
        else:
            data = export_onnx_bytes(checkpoint)
            try:
                atomic_write_bytes(path, data)
            except OSError:
                logger.debug("cannot cache the ONNX export at %s", path)
        return cls(data, threads)

    def __call__(
        self, batch: NDArray[np.float32], mm_per_pixel: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        feed = {"image": np.ascontiguousarray(batch, np.float32)}
        if mm_per_pixel is not None:
            feed["mm_per_pixel"] = np.ascontiguousarray(mm_per_pixel, np.float32)
        logits = self.session.run(None, feed)[0]
        return (1.0 / (1.0 + np.exp(-logits[:, 0]))).astype(np.float32)


def quantize_int8(onnx_bytes: bytes, calibration: list[NDArray[np.float32]]) -> bytes:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real inputs.

    Args:
        onnx_bytes: An fp32 export from :func:`export_onnx_bytes`.
        calibration: Preprocessed ``(1, 1, H, W)`` inputs for activation ranges.

    Returns:
        The quantised model. Its accuracy must be checked (see the benchmark).

    """
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(self.items, None)
            return None if x is None else {"image": x}

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return dst.read_bytes()
