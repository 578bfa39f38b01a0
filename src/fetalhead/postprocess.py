"""Post-processing: a network probability map -> the head's ellipse in original pixels."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import (
    BIWEIGHT_CUTOFF,
    Ellipse,
    boundary_sharpness,
    find_head_contour,
    fit_ellipse,
)
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.geometry.region import head_part

PostprocessName = Literal["lowres", "full"]

#: Exponent of |grad p| in the weights of the boundary points (inverse variances).
WEIGHT_POWER = 2.0

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


def near_border(
    points: NDArray[np.float64],
    h: int,
    w: int,
    tol: tuple[float, float],
    edges: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> NDArray[np.bool_]:
    """Which ``(x, y)`` points lie within ``tol`` of the ``h x w`` image's edges.

    ``edges`` says which of the left, top, right and bottom edges count.
    """
    x, y = points[:, 0], points[:, 1]
    tx, ty = tol
    left, top, right, bottom = edges
    return (
        (left & (x < tx - 0.5))
        | (top & (y < ty - 0.5))
        | (right & (x > w - 0.5 - tx))
        | (bottom & (y > h - 0.5 - ty))
    )


def postprocess(
    prob: NDArray[np.float32],
    lb: Letterbox,
    method: PostprocessName = "full",
    *,
    level: float = 0.5,
    weight_power: float = WEIGHT_POWER,
    open_ratio: float | None = None,
    cutoff: float = BIWEIGHT_CUTOFF,
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

    ``level`` (the iso-probability of the boundary), ``weight_power`` (the
    exponent of |grad p| in the weights; 0 weighs points by boundary length only)
    and ``cutoff`` (the robust fit's biweight cut-off, :func:`fit_ellipse`) are
    there for cross-validated comparisons (``benchmarks/cv_report.py``); the
    defaults are what ``predict`` uses.

    ``open_ratio`` (off when ``None``) drops the outline points that an opening of
    the region by a disk of that fraction of its largest inscribed radius cuts off
    (:func:`~fetalhead.geometry.region.head_part`): tissue merged with a small head.

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
    found = find_head_contour(region_map, level)
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
    sharp = boundary_sharpness(region_map, pts, step=orig_px)
    weights = sharp**weight_power * 0.5 * (seg + np.roll(seg, 1))
    tol = (BORDER_TOL_PX * orig_px[0], BORDER_TOL_PX * orig_px[1])
    on_border = near_border(pts, map_h, map_w, tol)
    if open_ratio is not None:
        head = head_part(pts, open_ratio)
        if head is not None:
            orig, weights, on_border = orig[head], weights[head], on_border[head]
    pts = orig
    if on_border.mean() > MAX_BORDER_FRACTION:
        reasons.append("touches_border")
        # Where the field of view clips the head, the region's boundary follows the
        # image edge, which is not skull: fit the ellipse to the rest.
        if (~on_border).sum() >= max(8, len(pts) // 3):
            pts, weights = pts[~on_border], weights[~on_border]
    if np.count_nonzero(weights) < 5:
        return None, None, None, ["no_head_found"]
    fit = fit_ellipse(pts, weights=weights, cutoff=cutoff)
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
