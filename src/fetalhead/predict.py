"""The head measurer: image + pixel size -> mask, ellipse, HC/BPD/OFD, GA, qc.

``HeadMeasurer`` is a thin predictor in the style of nnU-Net's and HD-BET's:
load once with :meth:`HeadMeasurer.from_pretrained`, then call
:meth:`HeadMeasurer.measure` (one image) or :meth:`HeadMeasurer.measure_batch`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from fetalhead.data import Letterbox
from fetalhead.ellipse import Ellipse, boundary_sharpness, find_head_contour, fit_ellipse
from fetalhead.gestation import GAEstimate, hadlock_1984, intergrowth_21st
from fetalhead.hardware import bf16_supported, native_bf16
from fetalhead.io import (
    InputError,
    LoadedImage,
    read_image,
    to_uint8_gray,
    validate_pixel_size,
)
from fetalhead.model import Checkpoint, ModelConfig, file_sha256, fold_batchnorm

logger = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "torch-bf16", "onnx"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PostprocessName = Literal["lowres", "full"]

#: Where the shipped weights live inside the package.
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "hc18_resunet16.pt"

#: Smallest head region accepted, as a fraction of the image area.
MIN_HEAD_AREA_FRACTION = 0.005
#: Mean probability inside the head below which the result is ``low_confidence``.
MIN_CONFIDENCE = 0.85
#: RMS ellipse-fit residual (network pixels) above which the shape is ``low_confidence``.
MAX_FIT_RMS_NET_PX = 3.0
#: Fraction of the boundary lying on the image edge above which qc is ``touches_border``.
MAX_BORDER_FRACTION = 0.02
#: Distance (original pixels) from the image edge within which boundary points are "on the border".
BORDER_TOL_PX = 1.0


class NoWeightsError(FileNotFoundError):
    """Raised when the default weights have not been trained or installed."""


@dataclass
class Measurement:
    """The result of measuring one image (or one frame of a multi-frame file).

    Attributes:
        filename: Name of the source file.
        frame: Frame index for multi-frame files, else ``None``.
        image_shape: ``(height, width)`` of the original image.
        qc: ``"ok"`` or ``;``-joined reasons (``no_head_found``, ``low_confidence``,
            ``touches_border``, ``unreadable``, ``no_pixel_size``).
        ellipse: Fitted ellipse in original pixels, or ``None``.
        pixel_size_mm: Pixel size used, or ``None``.
        pixel_size_source: ``cli``, ``csv``, ``dicom-region`` or ``dicom-pixel-spacing``.
        confidence: Mean head probability inside the predicted head.
        contour: Boundary points ``(x, y)`` in original pixels.
        error: Human-readable reason when the image could not be measured.

    """

    filename: str
    frame: int | None = None
    image_shape: tuple[int, int] | None = None
    qc: str = "ok"
    ellipse: Ellipse | None = None
    pixel_size_mm: float | None = None
    pixel_size_source: str | None = None
    confidence: float | None = None
    contour: NDArray[np.float64] | None = field(default=None, repr=False)
    error: str | None = None
    _prob: NDArray[np.float32] | None = field(default=None, repr=False)
    _letterbox: Letterbox | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the measure passed every quality check."""
        return self.qc == "ok"

    def _mm(self, px: float) -> float | None:
        if self.ellipse is None or self.pixel_size_mm is None:
            return None
        return px * self.pixel_size_mm

    @property
    def hc_mm(self) -> float | None:
        """Head circumference (Ramanujan perimeter of the ellipse) in mm."""
        return self._mm(self.ellipse.perimeter) if self.ellipse else None

    @property
    def bpd_mm(self) -> float | None:
        """Biparietal diameter: minor axis of the ellipse, in mm."""
        return self._mm(self.ellipse.minor) if self.ellipse else None

    @property
    def ofd_mm(self) -> float | None:
        """Occipitofrontal diameter: major axis of the ellipse, in mm."""
        return self._mm(self.ellipse.major) if self.ellipse else None

    @property
    def ga_hadlock(self) -> GAEstimate | None:
        """Gestational age by Hadlock 1984."""
        hc = self.hc_mm
        return hadlock_1984(hc) if hc is not None else None

    @property
    def ga_intergrowth(self) -> GAEstimate | None:
        """Gestational age by INTERGROWTH-21st."""
        hc = self.hc_mm
        return intergrowth_21st(hc) if hc is not None else None

    @cached_property
    def mask(self) -> NDArray[np.uint8] | None:
        """0/1 head mask at the original resolution (probability map upsampled).

        It is the largest region of the upsampled probability map above 0.5,
        with holes filled.
        """
        if self._prob is None or self._letterbox is None or self.image_shape is None:
            return None
        h, w = self.image_shape
        up = cv2.resize(self._letterbox.crop(self._prob), (w, h), interpolation=cv2.INTER_LINEAR)
        binary = (up > 0.5).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if n <= 1:
            return np.zeros((h, w), np.uint8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        from scipy import ndimage

        return ndimage.binary_fill_holes(labels == largest).astype(np.uint8)

    def to_row(self) -> dict[str, Any]:
        """One CSV/JSON row: HC18 ellipse parameters, measures, GA and qc."""
        row: dict[str, Any] = {"filename": self.filename, "frame": self.frame}
        hc18 = (
            self.ellipse.to_hc18_mm(self.pixel_size_mm)
            if self.ellipse is not None and self.pixel_size_mm is not None
            else dict.fromkeys(
                ("center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")
            )
        )
        row.update(hc18)
        gh, gi = self.ga_hadlock, self.ga_intergrowth
        row.update(
            {
                "hc_mm": self.hc_mm,
                "bpd_mm": self.bpd_mm,
                "ofd_mm": self.ofd_mm,
                "ga_weeks_hadlock": gh.weeks if gh else None,
                "ga_hadlock_in_range": gh.in_range if gh else None,
                "ga_weeks_intergrowth": gi.weeks if gi else None,
                "ga_intergrowth_in_range": gi.in_range if gi else None,
                "pixel_size_mm": self.pixel_size_mm,
                "pixel_size_source": self.pixel_size_source,
                "confidence": self.confidence,
                "qc": self.qc,
                "error": self.error,
            }
        )
        return row


PREDICTION_COLUMNS = list(Measurement("x").to_row().keys())


class Backend(Protocol):
    """Maps a float32 ``(N, 1, H, W)`` batch in [0, 1] to ``(N, H, W)`` probabilities."""

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


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

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self._run_compiled(x) if self._compiled is not None else self._forward(x)
            return torch.sigmoid(logits)[:, 0].float().cpu().numpy()

    def _run_compiled(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        self._compiled_batch = max(self._compiled_batch, n)
        if n < self._compiled_batch:
            pad = x.new_zeros((self._compiled_batch - n, *x.shape[1:]))
            x = torch.cat([x, pad])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        try:
            return self._compiled(x)[:n]
        except Exception as exc:  # inductor raises many types (compiler missing, ...)
            logger.warning("torch.compile failed, running eagerly instead: %s", exc)
            self._compiled = None
            return self._forward(x)[:n]


def preprocess(
    image: NDArray[np.uint8], config: ModelConfig
) -> tuple[NDArray[np.float32], Letterbox]:
    """Letterbox (or squash) a grayscale image to the network input, scaled to [0, 1]."""
    h, w = config.input_hw
    lb = Letterbox(image.shape[0], image.shape[1], h, w, config.keep_aspect)
    return lb.apply(image).astype(np.float32) * (1.0 / 255.0), lb


def _near_border(
    points: NDArray[np.float64], h: int, w: int, tol: tuple[float, float]
) -> NDArray[np.bool_]:
    x, y = points[:, 0], points[:, 1]
    tx, ty = tol
    return (x < tx - 0.5) | (y < ty - 0.5) | (x > w - 0.5 - tx) | (y > h - 0.5 - ty)


def postprocess(
    prob: NDArray[np.float32],
    lb: Letterbox,
    method: PostprocessName = "full",
) -> tuple[Ellipse | None, NDArray[np.float64] | None, float | None, list[str]]:
    """Turn a network probability map into an ellipse in original pixels.

    ``lowres`` runs marching squares on the network-resolution map and maps the
    sub-pixel contour to original coordinates; ``full`` upsamples the map to the
    original size first. Both fit the ellipse robustly to the largest region's
    outer boundary (points on the image edge excluded), each point weighted by
    the squared probability gradient there (measured over one original pixel)
    and by the length of boundary it stands for. The position of an iso-contour
    is uncertain in proportion to ``1 / |grad p|``, so these are inverse-variance
    weights: where the map changes slowly across the boundary (faint lateral
    skull walls, parallel to the beam; on HC18 biased outwards) the points count
    little. Unlike a hard cut (the fit to the sharpest 80 % of points used
    before), the weights change smoothly with the map, so tiny changes of the
    map (bfloat16 inference) move HC only a little, and both paths fit nearly
    the same curve (HC within 0.1 mm on the validation split).

    Returns:
        ``(ellipse, contour, confidence, qc_reasons)``.

    """
    if method not in ("lowres", "full"):
        raise ValueError(f"postprocess method must be 'lowres' or 'full', got {method!r}")
    region = lb.crop(prob)
    if method == "full":
        region_map = cv2.resize(region, (lb.in_w, lb.in_h), interpolation=cv2.INTER_LINEAR)
    else:
        region_map = region
    found = find_head_contour(region_map)
    map_h, map_w = region_map.shape
    # One original pixel in map pixels: the lowres path measures distances to the
    # border and probability gradients in original pixels, as the full path does.
    orig_px = (1.0, 1.0) if method == "full" else lb.scale
    if found is None or found[1] < MIN_HEAD_AREA_FRACTION * map_h * map_w or len(found[0]) < 8:
        return None, None, None, ["no_head_found"]
    pts = found[0]
    reasons = []
    # Inverse-variance weight of each point times the length of boundary it stands for
    # (half the distance to each neighbour along the contour, in original pixels), so
    # that the fit approximates an integral along the curve, whatever the sampling.
    orig = lb.to_original(pts + np.array(lb.pad)) if method == "lowres" else pts
    seg = np.linalg.norm(np.diff(orig, axis=0, append=orig[:1]), axis=1)
    weights = boundary_sharpness(region_map, pts, step=orig_px) ** 2 * 0.5 * (seg + np.roll(seg, 1))
    tol = (BORDER_TOL_PX * orig_px[0], BORDER_TOL_PX * orig_px[1])
    on_border = _near_border(pts, map_h, map_w, tol)
    pts = orig
    if on_border.mean() > MAX_BORDER_FRACTION:
        reasons.append("touches_border")
        # Where the field of view clips the head, the region's boundary follows the
        # image edge, which is not skull: fit the ellipse to the rest.
        if (~on_border).sum() >= max(8, len(pts) // 3):
            pts, weights = pts[~on_border], weights[~on_border]
    if np.count_nonzero(weights) < 5:
        return None, None, None, ["no_head_found"]
    fit = fit_ellipse(pts, weights=weights)
    e = fit.ellipse
    diagonal = math.hypot(lb.in_h, lb.in_w)
    if (
        not all(math.isfinite(v) for v in (e.cx, e.cy, e.a, e.b))
        or min(e.a, e.b) <= 0
        or max(e.a, e.b) > diagonal
    ):
        # No plausible head ellipse (a degenerate fit or a small arc of a huge one).
        return None, None, None, ["no_head_found"]
    inside = region > 0.5
    confidence = float(region[inside].mean()) if inside.any() else 0.0
    if (
        confidence < MIN_CONFIDENCE
        or fit.rms_residual_px * float(np.mean(lb.scale)) > MAX_FIT_RMS_NET_PX
    ):
        reasons.append("low_confidence")
    return e, pts, confidence, reasons


class HeadMeasurer:
    """Segment the foetal head, fit its ellipse and report biometry.

    Example:
        >>> m = HeadMeasurer.from_pretrained()          # doctest: +SKIP
        >>> r = m.measure("examples/191_HC.png", 0.157)  # doctest: +SKIP
        >>> r.hc_mm, r.ga_hadlock.weeks, r.qc           # doctest: +SKIP

    Args:
        checkpoint: The model and its description.
        backend: ``auto`` (``torch-bf16`` on CPUs with native bfloat16, else ONNX
            Runtime if installed, else PyTorch), ``torch``,
            ``torch-bf16`` (bfloat16 after the first convolution, CPUs with AVX-512)
            or ``onnx``.
        tta: Average with a left-right flipped pass. ``None`` (default): as the
            checkpoint recommends (``meta["inference"]["tta"]``, the setting its
            model-card metrics were measured with), else off.
        postprocess: ``full`` (upsampled map) or ``lowres`` (network-resolution contour).
        threads: Torch CPU threads (``None``: torch's default).
        compile: Compile a torch backend with ``torch.compile`` (see :class:`TorchBackend`).
        weights_path: Where the checkpoint came from (recorded in the outputs).

    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        backend: BackendName = "auto",
        tta: bool | None = None,
        postprocess: PostprocessName = "full",
        threads: int | None = None,
        compile: bool = False,
        weights_path: Path | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        recommended = checkpoint.meta.get("inference", {}).get("tta", False)
        self.tta = bool(recommended if tta is None else tta)
        self.postprocess_method: PostprocessName = postprocess
        self.weights_path = weights_path
        #: What the measurer was asked for, to build equal ones (e.g. in worker processes).
        self.settings: dict[str, Any] = {
            "backend": backend,
            "tta": self.tta,
            "postprocess": postprocess,
            "compile": compile,
        }
        if threads:
            torch.set_num_threads(threads)
        self.backend = _make_backend(checkpoint, backend, compile)

    @property
    def backend_name(self) -> str:
        """Name of the inference backend in use."""
        return getattr(self.backend, "name", "custom")

    @cached_property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights file, if loaded from one."""
        return file_sha256(self.weights_path) if self.weights_path else None

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> HeadMeasurer:
        """Load a measurer from a checkpoint file (default: the shipped weights).

        Raises:
            NoWeightsError: If no path is given and no shipped weights exist.

        """
        p = Path(path) if path else DEFAULT_WEIGHTS
        if not p.exists():
            if path:
                raise FileNotFoundError(f"{p}: weights file not found")
            raise NoWeightsError(
                f"no trained weights at {p}. Train them with\n"
                "  fetalhead train ../shared/data/hc18/training_set --out runs/hc18 "
                "--config configs/hc18_resunet16.yaml\n"
                "and pass --weights runs/hc18/best.pt (or copy it to that path)."
            )
        return cls(Checkpoint.load(p), weights_path=p, **kwargs)

    def _probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        probs = self.backend(batch)
        if self.tta:
            probs = 0.5 * (probs + self.backend(batch[..., ::-1].copy())[..., ::-1])
        return probs

    def measure_batch(
        self,
        images: list[NDArray[np.uint8]],
        pixel_sizes_mm: list[float | None],
        filenames: list[str] | None = None,
    ) -> list[Measurement]:
        """Measure several grayscale images in one network batch."""
        names = filenames or [f"image_{i}" for i in range(len(images))]
        if not images:
            return []
        prepared = [preprocess(img, self.config) for img in images]
        batch = np.stack([x for x, _ in prepared])[:, None]
        probs = self._probabilities(batch)
        return [
            self._finish(prob, lb, px, name)
            for prob, (_, lb), px, name in zip(probs, prepared, pixel_sizes_mm, names, strict=True)
        ]

    def _finish(
        self, prob: NDArray[np.float32], lb: Letterbox, px: float | None, name: str
    ) -> Measurement:
        e, contour, conf, reasons = postprocess(prob, lb, self.postprocess_method)
        if px is None:
            reasons.append("no_pixel_size")
        return Measurement(
            filename=name,
            image_shape=(lb.in_h, lb.in_w),
            qc=";".join(reasons) if reasons else "ok",
            ellipse=e,
            pixel_size_mm=px,
            confidence=conf,
            contour=contour,
            _prob=prob,
            _letterbox=lb,
        )

    def measure(
        self,
        image: NDArray | str | os.PathLike[str] | LoadedImage,
        pixel_size_mm: float | None = None,
        filename: str | None = None,
    ) -> Measurement:
        """Measure one image.

        Args:
            image: A grayscale or RGB array, a :class:`LoadedImage`, or a file path
                (PNG, JPEG, DICOM; the first frame is used).
            pixel_size_mm: Pixel size in mm. Optional for calibrated DICOM.
            filename: Name recorded in the result.

        Raises:
            InputError: If the image cannot be read or the pixel size is invalid.

        """
        source = "cli" if pixel_size_mm is not None else None
        if isinstance(image, (str, os.PathLike)):
            filename = filename or Path(image).name
            image = read_image(image)[0]
        name = filename or "image"
        if isinstance(image, LoadedImage):
            if pixel_size_mm is None and image.pixel_size_mm is not None:
                pixel_size_mm, source = image.pixel_size_mm, image.pixel_size_source
            pixels = image.pixels
        else:
            pixels = to_uint8_gray(np.asarray(image), name=name)
        if pixel_size_mm is not None:
            pixel_size_mm = validate_pixel_size(pixel_size_mm, name)
        result = self.measure_batch([pixels], [pixel_size_mm], [name])[0]
        result.pixel_size_source = source if pixel_size_mm is not None else None
        if isinstance(image, LoadedImage):
            result.frame = image.frame
            choose_dicom_region(result, image)
        return result

    def describe(self) -> dict[str, Any]:
        """Model version information for run records and the REST API."""
        meta = self.checkpoint.meta
        return {
            "weights": str(self.weights_path) if self.weights_path else None,
            "weights_sha256": self.weights_sha256,
            "architecture": "ResUNet",
            "config": {
                "start_filters": self.config.start_filters,
                "depth": self.config.depth,
                "input_hw": list(self.config.input_hw),
                "keep_aspect": self.config.keep_aspect,
                "normalisation": self.config.normalisation,
            },
            "backend": self.backend_name,
            "tta": self.tta,
            "postprocess": self.postprocess_method,
            "data_note": meta.get("data_note"),
            "metrics": meta.get("metrics"),
        }


def float32_backend() -> BackendName:
    """The fastest float32 backend installed: ``onnx`` if ONNX Runtime is, else ``torch``.

    For evaluations, whose numbers should not depend on the CPU they ran on.
    """
    from fetalhead.onnx import onnx_available

    return "onnx" if onnx_available() else "torch"


def _make_backend(checkpoint: Checkpoint, name: BackendName, compile: bool = False) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "auto":
        name = "torch-bf16" if native_bf16() else "torch" if compile else float32_backend()
    if name == "onnx":
        from fetalhead.onnx import OnnxBackend, onnx_available

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


def choose_dicom_region(m: Measurement, loaded: LoadedImage) -> None:
    """Use the pixel size of the calibrated DICOM region that contains the head."""
    if m.pixel_size_source != "dicom-region" or not loaded.regions or m.ellipse is None:
        return
    from fetalhead.dicom import region_for_point

    region = region_for_point(list(loaded.regions), m.ellipse.cx, m.ellipse.cy)
    if region is not None and region.dx_mm != m.pixel_size_mm:
        logger.info("%s: head lies in a region of %.4g mm pixels", m.filename, region.dx_mm)
        m.pixel_size_mm = region.dx_mm


def unreadable(name: str, message: str, frame: int | None = None) -> Measurement:
    """A result row for a file that could not be measured at all."""
    return Measurement(filename=name, frame=frame, qc="unreadable", error=message)


__all__ = [
    "DEFAULT_WEIGHTS",
    "HeadMeasurer",
    "InputError",
    "Measurement",
    "NoWeightsError",
    "postprocess",
    "preprocess",
]
