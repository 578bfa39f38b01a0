"""Reading images and pixel-size tables, and writing outputs atomically."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: Largest image accepted, in pixels (about 8k x 8k).
MAX_IMAGE_PIXELS = 64_000_000
#: Smallest side accepted, in pixels.
MIN_IMAGE_SIDE = 32

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = ("_Annotation.png", "_Mask.png")

PixelSizeSource = Literal["dicom-region", "dicom-pixel-spacing", "csv", "cli"]


class InputError(ValueError):
    """A user input that cannot be used; the message names the file."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded grayscale frame and what the file said about its calibration.

    Attributes:
        pixels: ``(H, W)`` uint8 grayscale image.
        pixel_size_mm: Pixel size read from the file itself (DICOM), if any.
        pixel_size_source: Where ``pixel_size_mm`` came from.
        frame: Frame index for multi-frame files, else ``None``.
        regions: Calibrated DICOM regions to choose from once the head is found
            (``fetalhead.dicom.CalibratedRegion``); empty when there is one choice.

    """

    pixels: NDArray[np.uint8]
    pixel_size_mm: float | None = None
    pixel_size_source: PixelSizeSource | None = None
    frame: int | None = None
    regions: tuple = ()


def is_label_file(path: Path) -> bool:
    """True for HC18 annotation files and simple-layout mask files."""
    return path.name.endswith(LABEL_SUFFIXES)


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


def _check_size(shape: tuple[int, ...], name: str) -> None:
    h, w = shape[:2]
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{name}: image is {w}x{h}, larger than the {MAX_IMAGE_PIXELS} pixel limit"
        )
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"{name}: image is {w}x{h}, smaller than {MIN_IMAGE_SIDE} px on a side")


def _decode_pil(data: bytes, name: str) -> NDArray[np.uint8]:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Our own size check below gives the clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            _check_size((im.height, im.width), name)
            im.load()
            if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}: image too large ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (PNG, JPEG or DICOM)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: cannot decode image ({exc})") from None
    return to_uint8_gray(arr, name=name)


def looks_like_dicom(data: bytes) -> bool:
    """True if ``data`` carries the DICOM ``DICM`` preamble marker."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_image_bytes(data: bytes, name: str) -> list[LoadedImage]:
    """Decode PNG, JPEG, other Pillow formats or DICOM from bytes.

    Args:
        data: The file contents.
        name: Name used in error messages.

    Returns:
        One :class:`LoadedImage` per frame (one for ordinary images).

    Raises:
        InputError: If the bytes are empty, truncated or not an image.

    """
    if not data:
        raise InputError(f"{name}: file is empty")
    if looks_like_dicom(data):
        from fetalhead.dicom import read_dicom_bytes

        return read_dicom_bytes(data, name)
    return [LoadedImage(_decode_pil(data, name))]


def read_image(path: str | os.PathLike[str]) -> list[LoadedImage]:
    """Read an image file (PNG, JPEG, DICOM by content) as grayscale frames.

    Raises:
        InputError: If the file cannot be read or decoded; the message names it.

    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, not an image") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    return read_image_bytes(data, str(p))


def read_gray(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """Read the first frame of an image as a uint8 grayscale array."""
    return read_image(path)[0].pixels


def validate_pixel_size(value: object, name: str) -> float:
    """Return ``value`` as a positive finite float or raise :class:`InputError`."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}: pixel size {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name}: pixel size must be a positive number of mm, got {value!r}")
    if v > 10:
        raise InputError(f"{name}: pixel size {v} mm is implausible (expected about 0.05-1 mm)")
    return v


@dataclass(frozen=True)
class PixelSizeTable:
    """Pixel sizes (and reference HC where given) keyed by file name."""

    pixel_size_mm: dict[str, float]
    hc_mm: dict[str, float]
    problems: dict[str, str]

    def lookup(self, filename: str) -> float:
        """Pixel size of ``filename`` or :class:`InputError` naming it."""
        key = Path(filename).name
        if key in self.problems:
            raise InputError(f"{key}: {self.problems[key]}")
        if key not in self.pixel_size_mm:
            raise InputError(f"{key}: not listed in the pixel-size CSV")
        return self.pixel_size_mm[key]


def read_pixel_size_csv(path: str | os.PathLike[str]) -> PixelSizeTable:
    """Read an HC18-style pixel-size CSV robustly.

    Accepts a UTF-8 BOM, ``,`` ``;`` or tab separators, CRLF line ends and a
    missing trailing newline. The columns are found by name (``filename`` and a
    column containing ``pixel size``; optionally ``head circumference``).
    Rows with a bad value, and names listed twice with different values, are
    recorded in ``problems`` and raise only when that file is looked up.

    Raises:
        InputError: If the file cannot be read or lacks the needed columns.

    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"{p}: cannot read pixel-size CSV ({exc.strerror or exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{p}: pixel-size CSV is empty")
    header = lines[0]
    delim = max([",", ";", "\t"], key=header.count)
    rows = list(csv.reader(lines, delimiter=delim))
    cols = [c.strip().lower() for c in rows[0]]
    try:
        i_name = next(i for i, c in enumerate(cols) if c in ("filename", "file", "image"))
        i_px = next(i for i, c in enumerate(cols) if "pixel" in c and "size" in c)
    except StopIteration:
        raise InputError(
            f"{p}: pixel-size CSV needs columns 'filename' and 'pixel size(mm)', got {rows[0]}"
        ) from None
    i_hc = next((i for i, c in enumerate(cols) if "circumference" in c), None)
    sizes: dict[str, float] = {}
    hcs: dict[str, float] = {}
    problems: dict[str, str] = {}
    for row in rows[1:]:
        if len(row) <= max(i_name, i_px) or not row[i_name].strip():
            continue
        name = Path(row[i_name].strip()).name
        try:
            value = validate_pixel_size(row[i_px].strip(), f"{p.name} row for {name}")
        except InputError as exc:
            problems[name] = str(exc)
            continue
        if name in sizes and not math.isclose(sizes[name], value):
            problems[name] = f"listed twice in {p.name} with different pixel sizes"
            continue
        sizes[name] = value
        if i_hc is not None and len(row) > i_hc:
            with contextlib.suppress(ValueError):
                hcs[name] = float(row[i_hc])
    return PixelSizeTable(sizes, hcs, problems)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w") -> Iterator[IO]:
    """Write a file atomically: to a temporary sibling, fsync, then rename.

    A crash leaves either the old file or the complete new one, never a part.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would create it
        kwargs = {"newline": "", "encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
