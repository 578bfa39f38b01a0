"""Ultrasound DICOM: pixels, colour conversion, Pixel Spacing and calibrated regions.

The reader reports what the file says and decides nothing: every calibrated
region of the Sequence of Ultrasound Regions (0018,6011) whose physical units
are centimetres on both axes, with its spacing per axis, and Pixel Spacing
(0028,0030). Which of them applies to a measurement is decided in one place,
:mod:`fetalhead.spacing`, once the head has been found.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from numpy.typing import NDArray

from fetalhead.image import CalibratedRegion, InputError, LoadedImage, check_size, to_uint8_gray

logger = logging.getLogger(__name__)

UNITS_CM = 3
SPATIAL_FORMAT_2D = 1
DATA_TYPE_TISSUE = 1


def looks_like_dicom(data: bytes) -> bool:
    """True if ``data`` carries the DICOM ``DICM`` preamble marker."""
    return len(data) >= 132 and data[128:132] == b"DICM"


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
                (abs(dy) * 10.0, abs(dx) * 10.0),
                int(getattr(r, "RegionSpatialFormat", 0)) == SPATIAL_FORMAT_2D
                and int(getattr(r, "RegionDataType", 0)) == DATA_TYPE_TISSUE,
            )
        )
    return out


def pixel_spacing(ds: object, name: str) -> tuple[float, float] | None:
    """Pixel Spacing (0028,0030) as ``(row, column)`` mm, if present and positive."""
    value = getattr(ds, "PixelSpacing", None)
    if value is None:
        return None
    try:
        row_mm, col_mm = (float(v) for v in value)
    except (TypeError, ValueError):
        logger.warning("%s: unusable Pixel Spacing %r", name, value)
        return None
    return (row_mm, col_mm) if row_mm > 0 and col_mm > 0 else None


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


class DicomReader:
    """DICOM files (recognised by the ``DICM`` marker), single- or multi-frame."""

    name = "dicom"

    def recognises(self, data: bytes) -> bool:
        """Whether the bytes carry the DICOM preamble marker."""
        return looks_like_dicom(data)

    def read(self, data: bytes, name: str) -> list[LoadedImage]:
        """Decode a DICOM file into grayscale frames with its calibration.

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
        check_size((rows, cols), name)
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
        regions = tuple(calibrated_regions(ds))
        spacing = pixel_spacing(ds, name)
        n = len(frames)
        header = ds.copy()
        for key in ("PixelData", "FloatPixelData"):
            if key in header:
                del header[key]
        return [
            LoadedImage(f, spacing, regions, i if n > 1 else None, n, header)
            for i, f in enumerate(frames)
        ]
