"""Ellipse geometry: fitting, perimeter, rendering and the HC18 convention.

Coordinates are in pixels with the origin at the centre of the top-left pixel,
``x`` along columns and ``y`` along rows (y points down). An :class:`Ellipse`
stores ``a``, the semi-axis that lies along ``angle`` (radians, measured from
+x towards +y and wrapped to ``[0, pi)``), and ``b``, the other semi-axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import measure

__all__ = [
    "Ellipse",
    "EllipseFit",
    "ellipse_points",
    "find_head_contour",
    "fit_ellipse",
    "ramanujan_perimeter",
    "render_ellipse_coverage",
    "render_ellipse_mask",
]


def ramanujan_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse perimeter.

    Args:
        a: One semi-axis length.
        b: The other semi-axis length.

    Returns:
        The perimeter, in the units of ``a`` and ``b``.

    """
    h = ((a - b) / (a + b)) ** 2 if a + b > 0 else 0.0
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in pixel coordinates (see the module docstring)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "angle", float(self.angle) % math.pi)

    @property
    def perimeter(self) -> float:
        """Ramanujan perimeter in pixels."""
        return ramanujan_perimeter(self.a, self.b)

    @property
    def major(self) -> float:
        """Full length of the major axis in pixels."""
        return 2.0 * max(self.a, self.b)

    @property
    def minor(self) -> float:
        """Full length of the minor axis in pixels."""
        return 2.0 * min(self.a, self.b)

    @property
    def area(self) -> float:
        """Area in square pixels."""
        return math.pi * self.a * self.b

    def scaled(self, sx: float, sy: float | None = None) -> Ellipse:
        """Return this ellipse with the coordinate axes scaled.

        Non-uniform scaling of a rotated ellipse is exact: the result is refitted
        to densely sampled, scaled points.
        """
        sy = sx if sy is None else sy
        if math.isclose(sx, sy):
            return Ellipse(self.cx * sx, self.cy * sx, self.a * sx, self.b * sx, self.angle)
        pts = ellipse_points(self, 720)
        pts = pts * np.array([sx, sy])
        return _fit_direct(pts)

    def to_hc18_mm(self, pixel_size_mm: float) -> dict[str, float]:
        """Return the HC18 submission parameters in millimetres."""
        return {
            "center_x_mm": self.cx * pixel_size_mm,
            "center_y_mm": self.cy * pixel_size_mm,
            "semi_axes_a_mm": self.a * pixel_size_mm,
            "semi_axes_b_mm": self.b * pixel_size_mm,
            "angle_rad": self.angle,
        }


@dataclass(frozen=True)
class EllipseFit:
    """An ellipse fitted to boundary points, with fit diagnostics."""

    ellipse: Ellipse
    rms_residual_px: float
    n_points: int
    n_inliers: int


def ellipse_points(e: Ellipse, n: int = 360) -> NDArray[np.float64]:
    """Sample ``n`` points (x, y) evenly in parameter along the ellipse."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    x = e.a * np.cos(t)
    y = e.b * np.sin(t)
    return np.stack([e.cx + ca * x - sa * y, e.cy + sa * x + ca * y], axis=1)


def _from_cv(box: tuple[tuple[float, float], tuple[float, float], float]) -> Ellipse:
    (cx, cy), (w, h), deg = box
    # OpenCV's RotatedRect: ``w`` lies along ``deg`` (from +x towards +y, y down).
    return Ellipse(float(cx), float(cy), float(w) / 2.0, float(h) / 2.0, math.radians(deg))


def _fit_direct(points: NDArray[np.float64]) -> Ellipse:
    return _from_cv(cv2.fitEllipseDirect(np.ascontiguousarray(points, dtype=np.float32)))


def _geometric_residuals(e: Ellipse, points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Approximate orthogonal distance of each point to the ellipse (pixels)."""
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    dx = points[:, 0] - e.cx
    dy = points[:, 1] - e.cy
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    a, b = max(e.a, 1e-9), max(e.b, 1e-9)
    f = (u / a) ** 2 + (v / b) ** 2 - 1.0
    gx = 2.0 * u / a**2
    gy = 2.0 * v / b**2
    return np.abs(f) / np.maximum(np.hypot(gx, gy), 1e-12)


def fit_ellipse(
    points: NDArray[np.floating],
    *,
    robust: bool = True,
    max_iter: int = 5,
    cutoff: float = 3.0,
) -> EllipseFit:
    """Fit an ellipse to boundary points with optional outlier rejection.

    The fit is Fitzgibbon's direct least-squares ellipse fit. With ``robust``,
    points whose geometric residual exceeds ``cutoff`` robust standard
    deviations (and at least one pixel) are dropped and the fit repeated, so a
    stray blob or a flat field-of-view edge does not drag the ellipse.

    Args:
        points: ``(N, 2)`` array of ``(x, y)`` boundary points, ``N >= 5``.
        robust: Iteratively reject outlying points.
        max_iter: Maximum number of rejection rounds.
        cutoff: Rejection threshold in robust standard deviations.

    Returns:
        The fit and its diagnostics.

    Raises:
        ValueError: If fewer than 5 points are given.

    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 5:
        raise ValueError(f"need at least 5 points to fit an ellipse, got {len(pts)}")
    keep = np.ones(len(pts), dtype=bool)
    e = _fit_direct(pts)
    for _ in range(max_iter if robust else 0):
        res = _geometric_residuals(e, pts)
        sigma = 1.4826 * float(np.median(res[keep])) + 1e-6
        new_keep = res <= max(cutoff * sigma, 1.0)
        if new_keep.sum() < max(5, len(pts) // 2) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        e = _fit_direct(pts[keep])
    res = _geometric_residuals(e, pts[keep])
    return EllipseFit(e, float(np.sqrt(np.mean(res**2))), len(pts), int(keep.sum()))


def _polygon_area(c: NDArray[np.float64]) -> float:
    x, y = c[:, 0], c[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def find_head_contour(
    prob: NDArray[np.floating], level: float = 0.5
) -> tuple[NDArray[np.float64], float] | None:
    """Sub-pixel outer boundary of the largest region where ``prob > level``.

    Marching squares runs on the map padded with zeros, so regions that touch
    the border still give closed contours. Only outer boundaries count, so holes
    inside the head are ignored.

    Args:
        prob: 2-D probability map.
        level: Iso-level of the boundary.

    Returns:
        ``(points, area)`` with points as ``(x, y)`` pixel coordinates of the
        map, or ``None`` if no region exceeds the level.

    """
    padded = np.pad(np.asarray(prob, dtype=np.float32), 1, constant_values=0.0)
    best: tuple[NDArray[np.float64], float] | None = None
    for c in measure.find_contours(padded, level, fully_connected="high"):
        if len(c) < 6:
            continue
        xy = c[:, ::-1] - 1.0
        area = _polygon_area(xy)
        if best is None or area > best[1]:
            best = (xy, area)
    return best


def boundary_sharpness(
    prob: NDArray[np.floating], points: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Gradient magnitude of a probability map at sub-pixel boundary points.

    Central differences of bilinear samples, one pixel either side. A steep
    transition means the map is sure where the boundary lies; a shallow one
    (a faint wall, a blurred edge) means it is not.

    Args:
        prob: 2-D probability map.
        points: ``(N, 2)`` array of ``(x, y)`` map coordinates.

    Returns:
        ``(N,)`` gradient magnitudes in probability per pixel.

    """
    p = np.asarray(prob, dtype=np.float32)
    x, y = points[:, 0], points[:, 1]
    gx = 0.5 * (_bilinear(p, x + 1.0, y) - _bilinear(p, x - 1.0, y))
    gy = 0.5 * (_bilinear(p, x, y + 1.0) - _bilinear(p, x, y - 1.0))
    return np.hypot(gx, gy)


def _bilinear(
    img: NDArray[np.float32], x: NDArray[np.float64], y: NDArray[np.float64]
) -> NDArray[np.float64]:
    h, w = img.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.intp), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def render_ellipse_mask(e: Ellipse, shape: tuple[int, int]) -> NDArray[np.uint8]:
    """Binary mask (0/1) of the pixels whose centres lie inside the ellipse."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    dx, dy = xx - e.cx, yy - e.cy
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    return (((u / max(e.a, 1e-9)) ** 2 + (v / max(e.b, 1e-9)) ** 2) <= 1.0).astype(np.uint8)


def render_ellipse_coverage(
    e: Ellipse, shape: tuple[int, int], supersample: int = 8
) -> NDArray[np.float32]:
    """Fraction of each pixel covered by the ellipse, in ``[0, 1]``.

    Used as a soft training target: its 0.5 iso-contour lies on the ellipse
    itself, so a network trained on it has no half-pixel bias in HC.
    """
    s = supersample
    h, w = shape
    big = Ellipse((e.cx + 0.5) * s - 0.5, (e.cy + 0.5) * s - 0.5, e.a * s, e.b * s, e.angle)
    hi = render_ellipse_mask(big, (h * s, w * s)).astype(np.float32)
    return hi.reshape(h, s, w, s).mean(axis=(1, 3))
