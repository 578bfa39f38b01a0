"""The image type every stage shares: pixels, per-axis spacing and calibrated regions.

A leaf module: it imports nothing from fetalhead, so that readers, pixel-size
resolution, inference and writers can all depend on it without cycles.
Spacing is carried per axis and ordered like the array axes, ``(row, column)``,
that is ``(dy, dx)`` in millimetres, as nnU-Net's readers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

#: Largest image accepted, in pixels (about 8k x 8k).
MAX_IMAGE_PIXELS = 64_000_000
#: Smallest side accepted, in pixels.
MIN_IMAGE_SIDE = 32

PixelSizeSource = Literal["dicom-region", "dicom-pixel-spacing", "csv", "cli"]


class InputError(ValueError):
    """A user input that cannot be used; the message names the file."""


@dataclass(frozen=True)
class CalibratedRegion:
    """A calibrated ultrasound region: bounds in pixels (inclusive), spacing in mm.

    Attributes:
        x0: First column.
        y0: First row.
        x1: Last column.
        y1: Last row.
        spacing_mm: ``(dy, dx)``, the physical size of a pixel along rows and columns.
        tissue_2d: A 2-D tissue region (spatial format 1, data type 1).

    """

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float]
    tissue_2d: bool

    @property
    def area(self) -> int:
        """Number of pixels in the region."""
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)

    def contains(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` (column, row) lies inside the region."""
        return self.x0 - 0.5 <= x <= self.x1 + 0.5 and self.y0 - 0.5 <= y <= self.y1 + 0.5


@dataclass(frozen=True)
class LoadedImage:
    """A decoded grayscale frame and what its file says about calibration.

    Attributes:
        pixels: ``(H, W)`` uint8 grayscale image.
        spacing_mm: ``(dy, dx)`` from the file's Pixel Spacing, if it has one.
        regions: Calibrated ultrasound regions of the file (DICOM (0018,6011)).
        frame: Frame index for multi-frame files, else ``None``.
        n_frames: Number of frames the file holds.
        header: The DICOM header without pixel data (a ``pydicom.Dataset``), for
            writing results back as DICOM; ``None`` for other formats.

    """

    pixels: NDArray[np.uint8]
    spacing_mm: tuple[float, float] | None = None
    regions: tuple[CalibratedRegion, ...] = ()
    frame: int | None = None
    n_frames: int = 1
    header: object | None = field(default=None, repr=False, compare=False)


def to_uint8_gray(arr: NDArray, *, name: str = "image") -> NDArray[np.uint8]:
    """Convert a 2-D or 3-D (RGB/RGBA) array of any integer or float type to uint8 gray."""
    a = np.asarray(arr)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[..., :3]
        if a.shape[2] == 3:
            a = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        elif a.shape[2] == 1:
            a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a)
    lo, hi = float(a.min()), float(a.max())
    if np.issubdtype(np.asarray(arr).dtype, np.integer) and lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def check_size(shape: tuple[int, ...], name: str) -> None:
    """Raise :class:`InputError` for images too large or too small to measure."""
    h, w = shape[:2]
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{name}: image is {w}x{h}, larger than the {MAX_IMAGE_PIXELS} pixel limit"
        )
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"{name}: image is {w}x{h}, smaller than {MIN_IMAGE_SIDE} px on a side")
