"""Overlays: the image with the mask contour, fitted ellipse, its axes and the HC."""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import format_weeks_days_range
from fetalhead.measure import Measurement

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_GREEN = (80, 220, 80)
_YELLOW = (0, 220, 255)
_CYAN = (255, 200, 0)
_MAGENTA = (255, 80, 255)
_RED = (60, 60, 255)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT))


def _draw_ellipse(
    out: NDArray[np.uint8], e: Ellipse, color: tuple[int, int, int], thick: int
) -> None:
    cv2.ellipse(
        out,
        _pt(e.cx, e.cy),
        _pt(e.a, e.b),
        math.degrees(e.angle),
        0,
        360,
        color,
        thick,
        cv2.LINE_AA,
        _SHIFT,
    )


def draw_overlay(
    image: NDArray[np.uint8], m: Measurement, reference: Ellipse | None = None
) -> NDArray[np.uint8]:
    """Return a BGR overlay of a measurement on its grayscale image.

    Args:
        image: The grayscale image the measurement was made on. A file's own pixels
            are resized to the measured shape when they differ (non-square DICOM
            pixels are measured after resampling to square ones).
        m: The measurement: mask contour in green, fitted ellipse in yellow, its axes
            in cyan (OFD) and magenta (BPD), and the values as text.
        reference: A reference ellipse (e.g. the annotation's), drawn in red.

    """
    if m.image_shape is not None and image.shape[:2] != tuple(m.image_shape):
        image = cv2.resize(image, m.image_shape[::-1], interpolation=cv2.INTER_LINEAR)
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    scale = max(1, round(max(image.shape) / 800))
    thick = max(1, scale)
    if reference is not None:
        _draw_ellipse(out, reference, _RED, thick)
    if m.contour is not None and len(m.contour):
        pts = np.round(m.contour * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, _GREEN, thick, cv2.LINE_AA, _SHIFT)
    e = m.ellipse
    if e is not None:
        _draw_ellipse(out, e, _YELLOW, thick)
        for semi, ang, color in ((e.a, e.angle, _CYAN), (e.b, e.angle + math.pi / 2, _MAGENTA)):
            dx, dy = semi * math.cos(ang), semi * math.sin(ang)
            cv2.line(
                out,
                _pt(e.cx - dx, e.cy - dy),
                _pt(e.cx + dx, e.cy + dy),
                color,
                thick,
                cv2.LINE_AA,
                _SHIFT,
            )
    lines = [m.filename if m.frame is None else f"{m.filename} [frame {m.frame}]"]
    if m.hc_mm is not None:
        hc = f"HC {m.hc_mm:.1f} mm"
        if m.hc_low_mm is not None and m.hc_high_mm is not None:
            hc += f" ({m.hc_low_mm:.0f}-{m.hc_high_mm:.0f})"
        lines.append(f"{hc}  BPD {m.bpd_mm:.1f}  OFD {m.ofd_mm:.1f}")
        ga = m.ga_hadlock
        if ga is not None:
            flag = "" if ga.in_range else " (out of range)"
            spread = m.ga_hadlock_2sd
            span = f" ({format_weeks_days_range(*spread)})" if spread else ""
            lines.append(f"GA {ga.weeks_days}{span} (Hadlock){flag}")
    lines.append(f"qc: {m.qc}")
    return _draw_text(out, lines, scale, thick)


def _draw_text(
    out: NDArray[np.uint8], lines: list[str], scale: int, thick: int
) -> NDArray[np.uint8]:
    """White lines of text with a dark halo, top left.

    The halo is the text's own strokes widened (a thicker ``putText`` would also
    advance each glyph further, so the two layers would drift apart along a line).
    """
    ink = np.zeros(out.shape[:2], np.uint8)
    y = 22 * scale
    for text in lines:
        cv2.putText(
            ink, text, (8 * scale, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, 255, thick,
            cv2.LINE_AA,
        )  # fmt: skip
        y += 24 * scale
    halo = cv2.dilate(ink, np.ones((3, 3), np.uint8), iterations=scale)
    for layer, value in ((halo, 0.0), (ink, 255.0)):
        alpha = layer.astype(np.float32)[..., None] / 255.0
        out = (out * (1.0 - alpha) + value * alpha).round().astype(np.uint8)
    return out


def encode_png(image: NDArray[np.uint8]) -> bytes:
    """Encode an array as PNG bytes."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
