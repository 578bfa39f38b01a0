"""Resolving the pixel size, in one place: CLI > CSV > DICOM region > Pixel Spacing.

Every path that measures (the batch runner, :class:`~fetalhead.predict.HeadMeasurer`
and the web server) calls :func:`resolve_pixel_size` for the spacing to start
from and, for a DICOM with several calibrated regions, :func:`region_of_head`
once the head is found, so that the spacing of the region the head lies in is
the one that resamples and scales it. As careful viewers do (OHIF and
cornerstone3D measure only within one region with equal units), a head that
crosses region borders, or lies where regions of different spacing overlap, is
flagged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.image import CalibratedRegion, InputError, LoadedImage, PixelSizeSource
from fetalhead.readers.tables import PixelSizeTable, validate_pixel_size

logger = logging.getLogger(__name__)

#: Relative row/column spacing difference above which pixels are resampled to square.
ANISOTROPY_TOLERANCE = 0.01


@dataclass(frozen=True)
class ResolvedSpacing:
    """The pixel spacing a frame is measured with, and where it came from.

    Attributes:
        spacing_mm: ``(dy, dx)`` in mm, ordered like the array axes.
        source: ``cli``, ``csv``, ``dicom-region`` or ``dicom-pixel-spacing``.
        region: The calibrated region it came from (``dicom-region`` only).

    """

    spacing_mm: tuple[float, float]
    source: PixelSizeSource
    region: CalibratedRegion | None = None

    @property
    def square(self) -> bool:
        """Whether rows and columns have the same spacing (within the tolerance)."""
        dy, dx = self.spacing_mm
        return abs(dx - dy) / max(dx, dy) <= ANISOTROPY_TOLERANCE


def default_region(regions: Collection[CalibratedRegion]) -> CalibratedRegion | None:
    """The largest 2-D tissue region, else the largest calibrated region."""
    if not regions:
        return None
    tissue = [r for r in regions if r.tissue_2d]
    return max(tissue or list(regions), key=lambda r: r.area)


def resolve_pixel_size(
    name: str,
    loaded: LoadedImage,
    *,
    cli_mm: float | None = None,
    table: PixelSizeTable | None = None,
    shared_basenames: Collection[str] = (),
) -> ResolvedSpacing:
    """The spacing to measure a frame with: CLI, then CSV, then DICOM region, then Pixel Spacing.

    The command line and the CSV override the file's calibration. A file missing
    from the CSV falls back to its own calibration. For DICOM, the largest 2-D
    tissue region is the starting point; :func:`region_of_head` then moves to the
    region that holds the head.

    Raises:
        InputError: If no usable pixel size is known for the file (never measured
            in pixels).

    """
    if cli_mm is not None:
        v = validate_pixel_size(cli_mm, "--pixel-size")
        return ResolvedSpacing((v, v), "cli")
    if table is not None:
        try:
            v = table.lookup(name, shared_basenames)
            return ResolvedSpacing((v, v), "csv")
        except InputError:
            if not loaded.regions and loaded.spacing_mm is None:
                raise
    region = default_region(loaded.regions)
    if region is not None:
        return ResolvedSpacing(region.spacing_mm, "dicom-region", region)
    if loaded.spacing_mm is not None:
        return ResolvedSpacing(loaded.spacing_mm, "dicom-pixel-spacing")
    raise InputError(
        f"{name}: no pixel size (give --pixel-size MM or --pixel-size-csv CSV; "
        "measures are never reported in pixels)"
    )


def square_pixels(
    pixels: NDArray[np.uint8], spacing: ResolvedSpacing, name: str = "image"
) -> tuple[NDArray[np.uint8], float, float]:
    """Resample rows so that pixels are square, with the column spacing as pixel size.

    Returns:
        ``(pixels, pixel_size_mm, row_scale)``: ``row_scale`` maps an original row
        coordinate to a resampled one (``y' = y * row_scale``).

    """
    dy, dx = spacing.spacing_mm
    if spacing.square:
        return pixels, dx, 1.0
    h, w = pixels.shape
    new_h = max(1, round(h * dy / dx))
    logger.warning(
        "%s: non-square pixels (%.4g x %.4g mm); resampling rows to square pixels", name, dx, dy
    )
    return cv2.resize(pixels, (w, new_h), interpolation=cv2.INTER_LINEAR), dx, new_h / h


@dataclass(frozen=True)
class HeadRegion:
    """Which calibrated region a measured head lies in.

    Attributes:
        region: The smallest region that contains the head's centre, if any.
        reasons: qc reasons: ``head_crosses_regions`` (the head's outline leaves
            the region), ``ambiguous_regions`` (regions of different spacing
            contain its centre) or ``outside_regions`` (none does).

    """

    region: CalibratedRegion | None
    reasons: tuple[str, ...] = ()


def region_of_head(
    regions: Collection[CalibratedRegion], outline_xy: NDArray[np.float64]
) -> HeadRegion:
    """Find the region of a head from its outline in original pixel coordinates."""
    cx, cy = (float(v) for v in outline_xy.mean(axis=0))
    inside = [r for r in regions if r.contains(cx, cy)]
    if not inside:
        return HeadRegion(None, ("outside_regions",))
    region = min(inside, key=lambda r: r.area)
    reasons = []
    if any(not np.allclose(r.spacing_mm, region.spacing_mm, rtol=1e-3) for r in inside):
        reasons.append("ambiguous_regions")
    x, y = outline_xy[:, 0], outline_xy[:, 1]
    if (
        x.min() < region.x0 - 0.5
        or x.max() > region.x1 + 0.5
        or y.min() < region.y0 - 0.5
        or y.max() > region.y1 + 0.5
    ):
        reasons.append("head_crosses_regions")
    return HeadRegion(region, tuple(reasons))
