"""Ultrasound DICOM: pixels, colour conversion and calibrated pixel size.

The pixel size comes from the Sequence of Ultrasound Regions (0018,6011):
regions whose physical units are centimetres (code 3) on both axes. With
several such regions, the one containing the measured head is used (see
:func:`region_for_point`), else the largest 2-D tissue region. Pixel Spacing
(0028,0030) is only a fallback. Non-square pixels (X and Y deltas more than
1 % apart) are resampled to square pixels before measuring.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.io import InputError, LoadedImage, _check_size, to_uint8_gray

logger = logging.getLogger(__name__)

UNITS_CM = 3
SPATIAL_FORMAT_2D = 1
DATA_TYPE_TISSUE = 1
#: Relative X/Y pixel-size difference above which pixels are resampled.
ANISOTROPY_TOLERANCE = 0.01


@dataclass(frozen=True)
class CalibratedRegion:
    """A calibrated ultrasound region (bounds in pixels, inclusive; sizes in mm)."""

    x0: int
    y0: int
    x1: int
    y1: int
    dx_mm: float
    dy_mm: float
    tissue_2d: bool

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


def calibrated_regions(ds: object) -> list[CalibratedRegion]:
    """Regions of (0018,6011) measured in cm on both axes, with positive deltas."""
    out = []
    for r in getattr(ds, "SequenceOfUltrasoundRegions", None) or []:
        try:
            ux, uy = int(r.PhysicalUnitsXDirection), int(r.PhysicalUnitsYDirection)
            dx, dy = float(r.PhysicalDeltaX), float(r.PhysicalDeltaY)
        except (AttributeError, TypeError, ValueError):
            continue
        if ux != UNITS_CM or uy != UNITS_CM or not (dx > 0 and dy > 0):
            continue
        out.append(
            CalibratedRegion(
                int(getattr(r, "RegionLocationMinX0", 0)),
                int(getattr(r, "RegionLocationMinY0", 0)),
                int(getattr(r, "RegionLocationMaxX1", 0)),
                int(getattr(r, "RegionLocationMaxY1", 0)),
                abs(dx) * 10.0,
                abs(dy) * 10.0,
                int(getattr(r, "RegionSpatialFormat", 0)) == SPATIAL_FORMAT_2D
                and int(getattr(r, "RegionDataType", 0)) == DATA_TYPE_TISSUE,
            )
        )
    return out


def default_region(regions: list[CalibratedRegion]) -> CalibratedRegion | None:
    """The largest 2-D tissue region, else the largest calibrated region."""
    if not regions:
        return None
    tissue = [r for r in regions if r.tissue_2d]
    return max(tissue or regions, key=lambda r: r.area)


def region_for_point(
    regions: list[CalibratedRegion], x: float, y: float
) -> CalibratedRegion | None:
    """The smallest calibrated region containing ``(x, y)``, if any."""
    inside = [r for r in regions if r.contains(x, y)]
    return min(inside, key=lambda r: r.area) if inside else None


def _to_gray_frames(ds: object, arr: NDArray, name: str) -> list[NDArray[np.uint8]]:
    from pydicom.pixels import apply_color_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames_n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        samples = 3
    frames = arr if frames_n > 1 else arr[None]
    out = []
    for f in frames:
        if samples == 1 and f.ndim == 3:  # unexpected trailing axis
            f = f[..., 0]
        g = to_uint8_gray(f, name=name)
        if photometric == "MONOCHROME1":
            g = 255 - g
        out.append(g)
    return out


def read_dicom_bytes(data: bytes, name: str) -> list[LoadedImage]:
    """Decode a DICOM file into grayscale frames with their pixel size.

    Raises:
        InputError: If the file is not valid DICOM, has no pixel data, or uses
            a compression no installed decoder handles.

    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{name}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputError(f"{name}: DICOM file has no pixel data")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    _check_size((rows, cols), name)
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as exc:
        raise InputError(
            f"{name}: cannot decode DICOM pixel data ({exc}); for compressed files "
            "install the decoders: pip install 'fetalhead[dicom]'"
        ) from None
    except (ValueError, EOFError, OSError, AttributeError, KeyError) as exc:
        raise InputError(f"{name}: DICOM pixel data is damaged or truncated ({exc})") from None
    frames = _to_gray_frames(ds, arr, name)

    regions = calibrated_regions(ds)
    region = default_region(regions)
    px: float | None = None
    source = None
    dx = dy = None
    if region is not None:
        dx, dy, source = region.dx_mm, region.dy_mm, "dicom-region"
        if len(regions) > 1:
            logger.info(
                "%s: %d calibrated regions; using the largest tissue region", name, len(regions)
            )
    elif "PixelSpacing" in ds:
        try:
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            if row_mm > 0 and col_mm > 0:
                dx, dy, source = col_mm, row_mm, "dicom-pixel-spacing"
        except (TypeError, ValueError):
            logger.warning("%s: unusable Pixel Spacing %r", name, ds.PixelSpacing)
    resampled = False
    if dx is not None and dy is not None:
        px = dx
        if abs(dx - dy) / max(dx, dy) > ANISOTROPY_TOLERANCE:
            logger.warning(
                "%s: non-square pixels (%.4g x %.4g mm); resampling rows to square pixels",
                name,
                dx,
                dy,
            )
            frames = [resample_square(f, dx, dy) for f in frames]
            resampled = True
    # Other regions are kept so that the one containing the head can be chosen
    # after measuring (their bounds no longer apply once rows are resampled).
    others = (
        tuple(regions) if source == "dicom-region" and len(regions) > 1 and not resampled else ()
    )
    multi = len(frames) > 1
    return [LoadedImage(f, px, source, i if multi else None, others) for i, f in enumerate(frames)]


def resample_square(frame: NDArray[np.uint8], dx_mm: float, dy_mm: float) -> NDArray[np.uint8]:
    """Resample the rows so that the pixel height equals the width ``dx_mm``."""
    h, w = frame.shape
    new_h = max(1, round(h * dy_mm / dx_mm))
    return cv2.resize(frame, (w, new_h), interpolation=cv2.INTER_LINEAR)
