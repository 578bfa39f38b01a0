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
    "blend_long_axis",
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


def blend_long_axis(e: Ellipse, ratio: float, weight: float) -> Ellipse:
    """``e`` with its semi-major axis drawn towards what its semi-minor axis predicts.

    A shape prior: heads of one size band vary little in the ratio of their axes (minor
    / major; SD about 0.045 in HC18), so the semi-minor axis ``b``, which a fit pins
    down better than the semi-major one, predicts the semi-major one as ``b / ratio``.
    The result has the semi-major axis ``(1 - weight) * a + weight * b / ratio`` and the
    same centre, angle and semi-minor axis. It stays the major axis, since
    ``b / ratio >= b`` for ``ratio <= 1``.

    Args:
        e: The fitted ellipse.
        ratio: The band's typical minor / major ratio, in (0, 1].
        weight: How far to move towards the prediction, in [0, 1] (0: ``e`` unchanged).

    Returns:
        The blended ellipse.

    Raises:
        ValueError: If ``ratio`` or ``weight`` is out of range.

    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"the axis ratio must lie in (0, 1], got {ratio}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the blend weight must lie in [0, 1], got {weight}")
    major, minor = max(e.a, e.b), min(e.a, e.b)
    blended = (1.0 - weight) * major + weight * minor / ratio
    if e.a >= e.b:
        return Ellipse(e.cx, e.cy, blended, e.b, e.angle)
    return Ellipse(e.cx, e.cy, e.a, blended, e.angle)


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


def _fit_direct(points: NDArray[np.float64], weights: NDArray[np.float64] | None = None) -> Ellipse:
    if weights is None:
        return _from_cv(cv2.fitEllipseDirect(np.ascontiguousarray(points, dtype=np.float32)))
    return _fit_direct_weighted(points, weights)


def _fit_direct_weighted(points: NDArray[np.float64], weights: NDArray[np.float64]) -> Ellipse:
    """Weighted Fitzgibbon fit (Halir and Flusser's stable form) on normalised points.

    Minimises ``sum(w * conic(p)**2)`` under ``4AC - B**2 = 1``. Returns an
    ellipse with NaN parameters where the points determine none.
    """
    w = weights / weights.sum()
    centre = w @ points
    scale = math.sqrt(float(w @ ((points - centre) ** 2).sum(axis=1))) or 1.0
    x, y = ((points - centre) / scale).T
    quad = np.stack([x * x, x * y, y * y], axis=1)
    lin = np.stack([x, y, np.ones_like(x)], axis=1)
    wq, wl = w[:, None] * quad, w[:, None] * lin
    s1, s2, s3 = quad.T @ wq, quad.T @ wl, lin.T @ wl
    nan = Ellipse(math.nan, math.nan, math.nan, math.nan, 0.0)
    try:
        t = -np.linalg.solve(s3, s2.T)
        m = s1 + s2 @ t
        _, vecs = np.linalg.eig(np.stack([m[2] / 2.0, -m[1], m[0] / 2.0]))
    except np.linalg.LinAlgError:
        return nan
    vecs = np.real(vecs)
    cond = 4.0 * vecs[0] * vecs[2] - vecs[1] ** 2
    if not np.any(cond > 0):
        return nan
    a, b, c = vecs[:, int(np.argmax(cond))]
    d, e, f = t @ np.array([a, b, c])
    den = 4.0 * a * c - b * b
    cx, cy = (b * e - 2.0 * c * d) / den, (b * d - 2.0 * a * e) / den
    f_centre = a * cx * cx + b * cx * cy + c * cy * cy + d * cx + e * cy + f
    lam, axes = np.linalg.eigh(np.array([[a, b / 2.0], [b / 2.0, c]]))
    with np.errstate(invalid="ignore", divide="ignore"):
        semi = np.sqrt(-f_centre / lam)
    return Ellipse(
        float(centre[0] + scale * cx),
        float(centre[1] + scale * cy),
        float(scale * semi[0]),
        float(scale * semi[1]),
        math.atan2(axes[1, 0], axes[0, 0]),
    )


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


def boundary_rms(e: Ellipse, points: NDArray[np.float64]) -> float:
    """RMS distance (pixels) of boundary points from an ellipse, unweighted; nan if none."""
    if len(points) == 0:
        return math.nan
    return float(np.sqrt(np.mean(_geometric_residuals(e, points) ** 2)))


#: Tukey biweight cut-off of the robust fit, in robust standard deviations (95 %
#: efficiency for Gaussian residuals).
BIWEIGHT_CUTOFF = 4.685


def fit_ellipse(
    points: NDArray[np.floating],
    *,
    weights: NDArray[np.floating] | None = None,
    robust: bool = True,
    max_iter: int = 5,
    cutoff: float = BIWEIGHT_CUTOFF,
) -> EllipseFit:
    """Fit an ellipse to boundary points, optionally weighted and robust to outliers.

    The fit is Fitzgibbon's direct least-squares ellipse fit, weighted when
    ``weights`` are given. With ``robust``, it is refined by ``max_iter`` rounds
    of iteratively reweighted least squares with Tukey's biweight on the
    geometric residuals: points farther than ``cutoff`` robust standard
    deviations (and at least one pixel) get weight 0, nearer ones a weight that
    falls smoothly with the residual. A stray blob or a flat field-of-view edge
    then does not drag the ellipse, and, unlike a hard rejection, a tiny change
    of the points changes the ellipse only a little.

    Args:
        points: ``(N, 2)`` array of ``(x, y)`` boundary points, ``N >= 5``.
        weights: Optional ``(N,)`` non-negative weights, e.g. inverse variances of
            the points' positions. Points of weight 0 are left out.
        robust: Downweight outlying points (Tukey's biweight).
        max_iter: Number of reweighting rounds.
        cutoff: Biweight cut-off in robust standard deviations (4.685: 95 %
            efficiency for Gaussian residuals).

    Returns:
        The fit and its diagnostics: ``rms_residual_px`` is weighted like the fit,
        ``n_inliers`` counts the points of positive final weight.

    Raises:
        ValueError: If fewer than 5 points have positive weight, or the weights
            do not match the points.

    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != len(pts) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"need {len(pts)} finite non-negative weights, got {len(w)}")
    usable = w > 0
    if usable.sum() < 5:
        raise ValueError(f"need at least 5 points to fit an ellipse, got {int(usable.sum())}")
    pts, w = pts[usable], w[usable]
    e = _fit_direct(pts, None if weights is None else w)
    fit_w = w
    for _ in range(max_iter if robust else 0):
        res = _geometric_residuals(e, pts)
        scale = max(cutoff * 1.4826 * float(np.median(res)), 1.0)
        fit_w = w * np.clip(1.0 - (res / scale) ** 2, 0.0, None) ** 2
        if np.count_nonzero(fit_w) < 5:
            fit_w = w
            break
        e = _fit_direct(pts, fit_w)
    res = _geometric_residuals(e, pts)
    rms = math.sqrt(float(np.average(res**2, weights=fit_w)))
    return EllipseFit(e, rms, len(usable), int(np.count_nonzero(fit_w)))


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
    p = np.asarray(prob, dtype=np.float32)
    above = p > level
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if len(rows) == 0:
        return None
    # Marching squares only where the map exceeds the level, plus a one-pixel margin
    # (below the level, so no contour crosses it): the same contours, fewer squares.
    r0, c0 = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    crop = p[r0 : rows[-1] + 2, c0 : cols[-1] + 2]
    padded = np.pad(crop, 1, constant_values=0.0)
    offset = np.array([c0 - 1.0, r0 - 1.0])
    best: tuple[NDArray[np.float64], float] | None = None
    for c in measure.find_contours(padded, level, fully_connected="high"):
        if len(c) < 6:
            continue
        xy = c[:, ::-1] + offset
        area = _polygon_area(xy)
        if best is None or area > best[1]:
            best = (xy, area)
    return best


def boundary_sharpness(
    prob: NDArray[np.floating],
    points: NDArray[np.float64],
    step: tuple[float, float] = (1.0, 1.0),
) -> NDArray[np.float64]:
    """Gradient magnitude of a probability map at sub-pixel boundary points.

    Central differences of bilinear samples, ``step`` either side. A steep
    transition means the map is sure where the boundary lies; a shallow one
    (a faint wall, a blurred edge) means it is not.

    Args:
        prob: 2-D probability map.
        points: ``(N, 2)`` array of ``(x, y)`` map coordinates.
        step: ``(x, y)`` half-width of the differences in map pixels. On a
            downsampled map, one original pixel (``lb.scale``) gives the
            gradients that the upsampled map would.

    Returns:
        ``(N,)`` gradient magnitudes in probability per map pixel.

    """
    p = np.asarray(prob, dtype=np.float32)
    x, y = points[:, 0], points[:, 1]
    sx, sy = step
    gx = (bilinear(p, x + sx, y) - bilinear(p, x - sx, y)) / (2.0 * sx)
    gy = (bilinear(p, x, y + sy) - bilinear(p, x, y - sy)) / (2.0 * sy)
    return np.hypot(gx, gy)


def bilinear(
    img: NDArray[np.float32], x: NDArray[np.float64], y: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Bilinear samples of ``img`` at ``(x, y)`` pixel centres, clamped to the image."""
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
