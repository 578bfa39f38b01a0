"""The head measurer: image + pixel size -> mask, ellipse, HC/BPD/OFD, GA, qc.

``HeadMeasurer`` is a thin predictor in the style of nnU-Net's and HD-BET's:
load once with :meth:`HeadMeasurer.from_pretrained`, then call
:meth:`HeadMeasurer.measure` (one image) or :meth:`HeadMeasurer.measure_batch`.
The stages it strings together live in their own modules: reading
(:mod:`fetalhead.readers`), pixel size (:mod:`fetalhead.spacing`), inference
(:mod:`fetalhead.infer`), post-processing (:mod:`fetalhead.postprocess`) and
measuring (:mod:`fetalhead.measure`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fetalhead.geometry.crop import CropBox, head_crop_box
from fetalhead.geometry.ellipse import BIWEIGHT_CUTOFF, Ellipse, blend_long_axis, boundary_rms
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.image import InputError, LoadedImage, to_uint8_gray
from fetalhead.infer.backends import BackendName, make_backend, preprocess
from fetalhead.measure import Measurement
from fetalhead.model import REFERENCE_MM_PER_PIXEL, Checkpoint, file_sha256
from fetalhead.plausibility import DEFAULT_MODEL as DEFAULT_REJECTOR
from fetalhead.plausibility import HeadRejector, declared_non_obstetric, head_features
from fetalhead.postprocess import (
    BORDER_TOL_PX,
    MAX_BORDER_FRACTION,
    WEIGHT_POWER,
    PostprocessName,
    near_border,
    postprocess,
)
from fetalhead.readers import read_image
from fetalhead.spacing import ResolvedSpacing, region_of_head, resolve_pixel_size, square_pixels
from fetalhead.uncertainty import (
    BANDS,
    band_of,
    flag_model,
    interval_features,
    interval_model,
    profile_features,
)

logger = logging.getLogger(__name__)

#: Crop of the second pass (``refine``): this many times the first pass's head box,
#: the geometric middle of the margins the crop-trained weights saw (1.1-1.8).
REFINE_MARGIN = 1.4

#: The second pass runs only where its crop gives the head at least this many times
#: more network pixels than the whole image did (else it would repeat the first pass).
REFINE_MIN_ZOOM = 1.1

#: Where the shipped weights live inside the package.
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "hc18_resunet16.pt"


def _each_band(stored: Any, name: str, what: str) -> bool:
    """Whether the weights give ``name``; raise unless it is ``what`` for each HC band."""
    if stored is None:
        return False
    if not isinstance(stored, dict) or set(stored) != set(BANDS):
        raise ValueError(f"the weights' {name} must give {what} for each of {BANDS}")
    return True


def _band_levels(stored: Any) -> dict[str, float] | None:
    """Check the weights' ``level_by_band``: a level in (0, 1) for each HC band."""
    if not _each_band(stored, "level_by_band", "a level"):
        return None
    levels = {b: float(stored[b]) for b in BANDS}
    if not all(0.0 < v < 1.0 for v in levels.values()):
        raise ValueError(f"the weights' level_by_band levels must lie in (0, 1), got {levels}")
    return levels


def _shape_prior(stored: Any) -> dict[str, tuple[float, float]] | None:
    """Check the weights' ``shape_prior``: an axis ratio and a blend weight for each HC band."""
    if not _each_band(stored, "shape_prior", "a ratio and weight"):
        return None
    prior = {}
    for band in BANDS:
        entry = stored[band]
        if not isinstance(entry, dict) or {"ratio", "weight"} - set(entry):
            raise ValueError(f"the weights' shape_prior[{band!r}] needs 'ratio' and 'weight'")
        ratio, weight = float(entry["ratio"]), float(entry["weight"])
        if not (0.0 < ratio <= 1.0 and 0.0 <= weight <= 1.0):
            raise ValueError(
                f"the weights' shape_prior[{band!r}] wants a ratio in (0, 1] and a weight in "
                f"[0, 1], got {entry}"
            )
        prior[band] = (ratio, weight)
    return prior


class NoWeightsError(FileNotFoundError):
    """Raised when the default weights have not been trained or installed."""


def fit_by_band(
    prob: NDArray[np.float32],
    lb: Letterbox,
    method: PostprocessName,
    band_levels: dict[str, float] | None,
    level: float,
    px: float | None,
    open_ratio: float | None = None,
    weight_power: float = WEIGHT_POWER,
    cutoff: float = BIWEIGHT_CUTOFF,
) -> tuple[Ellipse | None, NDArray[np.float64] | None, float | None, list[str]]:
    """The head's ellipse (:func:`~fetalhead.postprocess.postprocess`) at its HC band's level.

    With levels by band and a pixel size, the ellipse is fitted at the second band's
    level (the commonest heads), and fitted again at its band's level if that HC falls
    in a band with another level (kept unless that finds no head). Otherwise at
    ``level``. ``open_ratio``, ``weight_power`` and ``cutoff`` are passed on to
    :func:`~fetalhead.postprocess.postprocess`.
    """
    at = partial(
        postprocess,
        prob,
        lb,
        method,
        open_ratio=open_ratio,
        weight_power=weight_power,
        cutoff=cutoff,
    )
    if not band_levels or px is None:
        return at(level=level)
    first = band_levels["second"]
    fit = at(level=first)
    if fit[0] is not None:
        wanted = band_levels[band_of(fit[0].perimeter * px)]
        if wanted != first:
            again = at(level=wanted)
            if again[0] is not None:
                return again
    return fit


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
        reject_non_heads: Drop found regions that are not a foetal head in ultrasound
            (:mod:`fetalhead.plausibility`; ``no_head_found``, no numbers), and do not
            measure DICOM frames whose header declares a view with no foetal head in it
            (:func:`~fetalhead.plausibility.declared_non_obstetric`;
            ``no_head_found;non_obstetric_view``).
        interval_level: Coverage of the calibrated HC interval, one of the levels the
            weights carry (0.8, 0.9 or 0.95 for the shipped ones).
        refine: Measure in two passes: find the head on the whole image, then measure
            it again on a crop that holds it at one scale (``REFINE_MARGIN`` times its
            box), for weights trained on such crops (``crop_fraction``). The second
            pass gives the ellipse; the qc, the interval and the non-head check come
            from the first, as calibrated. ``None`` (default): as the checkpoint
            recommends (``meta["inference"]["refine"]``), else off.
        shape_prior: Draw each head's semi-major axis towards what its semi-minor axis
            predicts for its HC band (:func:`~fetalhead.geometry.ellipse.blend_long_axis`),
            with the ratio and weight the weights carry (``meta["inference"]
            ["shape_prior"]``, chosen by cross-validation). Needs a pixel size (for the
            band); the interval, the flag and the non-head check read the fit before it,
            as calibrated. ``None`` or ``True`` (default): as the weights carry, else
            off; ``False``: off.

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
        reject_non_heads: bool = True,
        interval_level: float = 0.9,
        refine: bool | None = None,
        shape_prior: bool | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        inference = checkpoint.meta.get("inference", {})
        self.tta = bool(inference.get("tta", False) if tta is None else tta)
        self.refine = bool(inference.get("refine", False) if refine is None else refine)
        #: Iso-probability of the boundary: as the weights recommend, else 0.5. Where
        #: the weights give a level per HC band, it is the level of images without a
        #: pixel size, and the level the qc flag's boundary profile is read at.
        self.level = float(inference.get("level", 0.5))
        #: Boundary level per HC band (``first``, ``second``, ``third``), if the weights
        #: give one: see :meth:`_fit`.
        self.band_levels: dict[str, float] | None = _band_levels(inference.get("level_by_band"))
        #: Opening ratio that cuts merged tissue off the head region before the fit
        #: (:func:`~fetalhead.geometry.region.head_part`), if the weights recommend one.
        self.open_ratio: float | None = inference.get("open_ratio")
        if self.open_ratio is not None and not 0.0 < self.open_ratio < 1.0:
            raise ValueError(f"the weights' open_ratio must lie in (0, 1), got {self.open_ratio}")
        #: Ratio and blend weight of the long-axis prior per HC band (see ``shape_prior``).
        self.shape_prior: dict[str, tuple[float, float]] | None = (
            _shape_prior(inference.get("shape_prior")) if shape_prior is not False else None
        )
        self.postprocess_method: PostprocessName = postprocess
        self.weights_path = weights_path
        #: What the measurer was asked for, to build equal ones (e.g. in worker processes).
        self.settings: dict[str, Any] = {
            "backend": backend,
            "tta": self.tta,
            "refine": self.refine,
            "shape_prior": self.shape_prior is not None,
            "postprocess": postprocess,
            "compile": compile,
            "reject_non_heads": reject_non_heads,
            "interval_level": interval_level,
        }
        #: The calibrated HC interval at ``interval_level``, if the weights carry one.
        self.interval = interval_model(checkpoint.meta, interval_level)
        #: Flags ``uncertain_hc`` where a large HC error is likely, if calibrated.
        self.flag = flag_model(checkpoint.meta)
        #: Decides whether a found head is a foetal head in ultrasound (None: keep all).
        self.rejector: HeadRejector | None = (
            HeadRejector.load() if reject_non_heads and DEFAULT_REJECTOR.exists() else None
        )
        #: Whether a DICOM header that declares a non-obstetric view stops the measurement.
        self.reject_declared_views = reject_non_heads
        if threads:
            torch.set_num_threads(threads)
        self.backend = make_backend(checkpoint, backend, compile)

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

    def network_scale(
        self, lbs: list[Letterbox], pixel_sizes: list[float | None]
    ) -> NDArray[np.float32] | None:
        """The mm per network pixel of letterboxed images, for a network with a scale input.

        An image without a pixel size gets :data:`fetalhead.model.REFERENCE_MM_PER_PIXEL`
        (its map is used; no HC in mm is reported for it). ``None`` for other networks.
        """
        if not self.config.scale_input:
            return None
        mm = [REFERENCE_MM_PER_PIXEL if px is None else lb.mm_per_pixel(px)
              for lb, px in zip(lbs, pixel_sizes, strict=True)]  # fmt: skip
        return np.asarray(mm, np.float32)

    def _probabilities(
        self, batch: NDArray[np.float32], mm_per_pixel: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """Head probabilities of a preprocessed batch (with the flipped pass under TTA).

        Raises:
            ValueError: If the network takes the pixel size and ``mm_per_pixel`` is missing.

        """
        if self.config.scale_input and mm_per_pixel is None:
            raise ValueError("these weights take the pixel size: pass mm_per_pixel")
        args = () if mm_per_pixel is None else (mm_per_pixel,)
        probs = self.backend(batch, *args)
        if self.tta:
            probs = 0.5 * (probs + self.backend(batch[..., ::-1].copy(), *args)[..., ::-1])
        return probs

    def measure_batch(
        self,
        images: list[NDArray[np.uint8]],
        pixel_sizes_mm: list[float | None],
        filenames: list[str] | None = None,
        *,
        hc_gate: bool = True,
    ) -> list[Measurement]:
        """Measure several grayscale images in one network batch.

        ``hc_gate=False`` leaves the non-head envelope's gate on HC in mm to the caller
        (:meth:`measure_frames`, whose DICOM regions may change the spacing).
        """
        names = filenames or [f"image_{i}" for i in range(len(images))]
        if not images:
            return []
        prepared = [preprocess(img, self.config) for img in images]
        batch = np.stack([x for x, _ in prepared])[:, None]
        lbs = [lb for _, lb in prepared]
        probs = self._probabilities(batch, self.network_scale(lbs, pixel_sizes_mm))
        results = [
            self._finish(img, prob, lb, px, name)
            for img, prob, (_, lb), px, name in zip(
                images, probs, prepared, pixel_sizes_mm, names, strict=True
            )
        ]
        if self.refine:
            self.refine_in_place(images, results)
        return [self._hc_gate(m) for m in results] if hc_gate else results

    def _with_hc_margin(self, score: float, hc_mm: float | None) -> float:
        """``score`` lowered to the HC gate's margin where that is smaller (and known)."""
        floor = self.rejector.hc_floor if self.rejector else None
        return score if floor is None or hc_mm is None else min(score, floor.margin(hc_mm))

    def _hc_gate(self, m: Measurement) -> Measurement:
        """Drop a head smaller than every foetal head the envelope knows, at its final spacing.

        The envelope's gate on HC in mm (:class:`~fetalhead.plausibility.HCFloor`) joins
        ``head_score``; at or below 0 the head gets ``no_head_found`` and no measures.
        """
        if m.head_score is None or m.hc_mm is None:
            return m
        score = self._with_hc_margin(m.head_score, m.hc_mm)
        if score > 0.0:
            return replace(m, head_score=score)
        return replace(
            m,
            qc="no_head_found",
            ellipse=None,
            contour=None,
            head_score=score,
            hc_rel_halfwidth=None,
            flag_score=None,
        )

    def refine_in_place(self, images: list[NDArray[np.uint8]], results: list[Measurement]) -> None:
        """Second pass: re-measure each found head on a crop around it, in place.

        ``measure_batch`` calls it when ``refine`` is on; called on the results of a
        one-pass measurer, it gives the two-pass results without running the first
        pass again (``benchmarks/cv_refine.py`` keeps both).

        The refined ellipse replaces the first one unless the second pass finds no
        head or its head runs into a side of the crop that lies inside the image
        (then the crop was cut from a wrong first ellipse, and the first is kept).
        """
        net_h, net_w = self.config.input_hw
        todo: list[tuple[int, CropBox]] = []
        for i, r in enumerate(results):
            if r.ellipse is None:
                continue
            box = head_crop_box(r.ellipse, images[i].shape, (net_h, net_w), REFINE_MARGIN)
            (h, w), (full_h, full_w) = box.shape, images[i].shape
            zoom = min(net_h / h, net_w / w) / min(net_h / full_h, net_w / full_w)
            if zoom >= REFINE_MIN_ZOOM:
                todo.append((i, box))
        if not todo:
            return
        prepared = [preprocess(images[i][b.y0 : b.y1, b.x0 : b.x1], self.config) for i, b in todo]
        scale = self.network_scale(
            [lb for _, lb in prepared], [results[i].pixel_size_mm for i, _ in todo]
        )
        probs = self._probabilities(np.stack([x for x, _ in prepared])[:, None], scale)
        for (i, box), prob, (_, lb) in zip(todo, probs, prepared, strict=True):
            e, contour, _, _ = self._fit(prob, lb, results[i].pixel_size_mm)
            if e is None or contour is None:
                continue
            tol = BORDER_TOL_PX if self.postprocess_method == "full" else 1.0 / min(lb.scale)
            inner = box.is_inner_edge(images[i].shape)
            if near_border(contour, *box.shape, (tol, tol), inner).mean() > MAX_BORDER_FRACTION:
                continue
            r = results[i]
            r.ellipse = Ellipse(e.cx + box.x0, e.cy + box.y0, e.a, e.b, e.angle)
            r.contour = contour + np.array([box.x0, box.y0], dtype=np.float64)

    def _fit(
        self, prob: NDArray[np.float32], lb: Letterbox, px: float | None
    ) -> tuple[Ellipse | None, NDArray[np.float64] | None, float | None, list[str]]:
        """The head's ellipse at the boundary level of its HC band (:func:`fit_by_band`)."""
        return fit_by_band(
            prob, lb, self.postprocess_method, self.band_levels, self.level, px, self.open_ratio
        )

    def _finish(
        self,
        image: NDArray[np.uint8],
        prob: NDArray[np.float32],
        lb: Letterbox,
        px: float | None,
        name: str,
    ) -> Measurement:
        e, contour, conf, reasons = self._fit(prob, lb, px)
        head_score = half = flag_score = None
        if e is not None and contour is not None and conf is not None:
            # One boundary residual serves the non-head check and the interval.
            rms = boundary_rms(e, contour)
            hc = e.perimeter * px if px is not None else None
            if self.rejector:
                # The gate on HC in mm waits for the final spacing (_hc_gate).
                head_score = self.rejector.score(head_features(image, e, contour, conf, rms))
            if head_score is not None and head_score <= 0.0:
                # Not a foetal head in ultrasound: no ellipse, no measures. Its score
                # still tells how far out it lies, the HC gate included.
                head_score = self._with_hc_margin(head_score, hc)
                e, contour, reasons = None, None, ["no_head_found"]
            else:
                features = interval_features(e, rms, conf, "touches_border" in reasons, hc)
                if hc is not None and (self.flag or (self.interval and self.interval.learned)):
                    features |= profile_features(lb.crop(prob), lb.scale, e, self.level)
                if self.interval and hc is not None:
                    half = self.interval.scale(hc, features)
                if self.flag and hc is not None:
                    flag_score = self.flag.score(hc, features)
                    if self.flag.decide(hc, flag_score):
                        reasons.append("uncertain_hc")
                if self.shape_prior and hc is not None:
                    e = blend_long_axis(e, *self.shape_prior[band_of(hc)])
        if px is None:
            reasons.append("no_pixel_size")
        return Measurement(
            filename=name,
            image_shape=(lb.in_h, lb.in_w),
            qc=";".join(reasons) if reasons else "ok",
            ellipse=e,
            pixel_size_mm=px,
            confidence=conf,
            head_score=head_score,
            hc_rel_halfwidth=half,
            flag_score=flag_score,
            contour=contour,
            _prob=prob,
            _letterbox=lb,
        )

    def measure_frames(
        self, frames: list[LoadedImage], spacings: list[ResolvedSpacing], names: list[str]
    ) -> list[Measurement]:
        """Measure decoded frames with their resolved spacing, in one network batch.

        Non-square pixels are resampled to square ones first. For a spacing taken
        from a DICOM region, the head's region is then checked: if the head lies in
        another calibrated region, the frame is measured again with that region's
        spacing, and a head that crosses regions or lies where regions disagree is
        flagged (:func:`fetalhead.spacing.region_of_head`). A DICOM frame whose header
        declares a view with no foetal head in it (a cardiac or breast examination) is
        not measured: ``no_head_found;non_obstetric_view``.
        """
        declared = [
            declared_non_obstetric(f.header) if self.reject_declared_views else None for f in frames
        ]
        todo = [i for i, why in enumerate(declared) if why is None]
        squared = {i: square_pixels(frames[i].pixels, spacings[i], names[i]) for i in todo}
        results = self.measure_batch(
            [squared[i][0] for i in todo],
            [squared[i][1] for i in todo],
            [names[i] for i in todo],
            hc_gate=False,
        )
        measured = dict(zip(todo, results, strict=True))
        # Once per file and reason, in input order.
        for why_not in dict.fromkeys(
            (n, why) for n, why in zip(names, declared, strict=True) if why
        ):
            logger.warning("%s: not measured: %s, not an obstetric view", *why_not)
        out = []
        for i, (f, s, n) in enumerate(zip(frames, spacings, names, strict=True)):
            if i not in measured:
                m = Measurement(
                    n, image_shape=f.pixels.shape[:2], qc="no_head_found;non_obstetric_view"
                )
            else:
                m = measured[i]
                if s.source == "dicom-region" and f.regions and m.contour is not None:
                    m = self._in_head_region(f, s, n, m, squared[i][2])
                m = self._hc_gate(m)
            m.frame, m.n_frames, m.pixel_size_source = f.frame, f.n_frames, s.source
            out.append(m)
        return out

    def _in_head_region(
        self, f: LoadedImage, s: ResolvedSpacing, name: str, m: Measurement, row_scale: float
    ) -> Measurement:
        """Re-measure with the spacing of the region the head lies in, and flag doubts."""
        contour = m.contour if m.contour is not None else np.zeros((0, 2))
        found = region_of_head(f.regions, contour / np.array([1.0, row_scale]))
        if found.region is not None and found.region != s.region:
            s = ResolvedSpacing(found.region.spacing_mm, "dicom-region", found.region)
            logger.info("%s: head lies in a region of %s mm pixels", name, s.spacing_mm)
            pixels, px, row_scale = square_pixels(f.pixels, s, name)
            m = self.measure_batch([pixels], [px], [name], hc_gate=False)[0]
            if m.contour is not None:
                found = region_of_head(f.regions, m.contour / np.array([1.0, row_scale]))
        m.add_qc(*found.reasons)
        return m

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
            pixel_size_mm: Pixel size in mm; overrides a DICOM's calibration.
                Optional for calibrated DICOM.
            filename: Name recorded in the result.

        Raises:
            InputError: If the image cannot be read or the pixel size is invalid.

        """
        if isinstance(image, (str, os.PathLike)):
            filename = filename or Path(image).name
            image = read_image(image)[0]
        name = filename or "image"
        if not isinstance(image, LoadedImage):
            image = LoadedImage(to_uint8_gray(np.asarray(image), name=name))
        try:
            spacing = resolve_pixel_size(name, image, cli_mm=pixel_size_mm)
        except InputError:
            if pixel_size_mm is not None:
                raise
            # No calibration at all: measure the shape, report no millimetres.
            result = self.measure_batch([image.pixels], [None], [name])[0]
            result.frame, result.n_frames = image.frame, image.n_frames
            return result
        return self.measure_frames([image], [spacing], [name])[0]

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
            "refine": self.refine,
            "boundary_level": self.level,
            "boundary_level_by_band": self.band_levels,
            "open_ratio": self.open_ratio,
            "shape_prior": self.shape_prior,
            "postprocess": self.postprocess_method,
            "data_note": meta.get("data_note"),
            "metrics": meta.get("metrics"),
        }


__all__ = [
    "DEFAULT_WEIGHTS",
    "HeadMeasurer",
    "InputError",
    "Measurement",
    "NoWeightsError",
]
