"""The head's part of a found region, where the head has merged with tissue beside it.

A small head that lies against the uterine wall or the placenta can come out of the
network joined to that tissue, one region with a neck between the two. The ellipse
fitted to the whole outline then runs through both (HC18 training images 007_HC and
022_2HC came out 51 and 21 mm too large under cross-validation). A morphological
opening of the region by a disk, with a radius that is a fixed fraction of the
region's largest inscribed radius, cuts such necks: a head ellipse whose tips are
rounder than the disk passes through the opening unchanged, while a lobe or a bridge
narrower than the disk does not. :func:`head_part` returns the outline points of the
region that lie on the opened part that holds the region's deepest point, so that the
ellipse is fitted to the head's outline only.

Judged on held-out folds of the shipped recipe it did not help (ADF -0.01 mm, -0.07 to
+0.03, on 362 images; ``benchmarks/cv_trim.py``): most merged heads there are fused with
more than a thin strip. It is off unless weights recommend it
(``meta["inference"]["open_ratio"]``), and the shipped ones do not.

Coordinates are ``(x, y)`` pixels of the map, as
:func:`~fetalhead.geometry.ellipse.find_head_contour` returns them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["head_part"]

#: The opening removes less than this share of the region: the outline is kept whole.
MIN_REMOVED_SHARE = 0.02

#: Outline points farther than this (map pixels) from the opened part are dropped.
KEEP_TOLERANCE_PX = 2.0

#: The opening is computed on a grid at most this many cells across the region.
GRID_CELLS = 512


def _distance_to(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Euclidean distance of every pixel to the nearest pixel of ``mask`` (0 on it)."""
    outside = np.ascontiguousarray(~mask, dtype=np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def head_part(points: NDArray[np.float64], ratio: float) -> NDArray[np.bool_] | None:
    """Which outline points lie on the head, once an opening has cut off what is not.

    Args:
        points: The region's closed outer outline, ``(x, y)`` map pixels, in order.
        ratio: Radius of the opening disk as a fraction of the region's largest
            inscribed radius, in (0, 1). An ellipse with axis ratio ``q`` (major over
            minor) passes unchanged while ``ratio < 1 / q``.

    Returns:
        A boolean mask over ``points``, or ``None`` when the outline is to be kept
        whole: the opening removed less than :data:`MIN_REMOVED_SHARE` of the region,
        or kept fewer than a third of the outline's points.

    Raises:
        ValueError: If ``ratio`` is not in (0, 1).

    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the opening ratio must lie in (0, 1), got {ratio}")
    pts = np.asarray(points, np.float64)
    # On a grid over the region's box (2 cells of margin), coarser than the map
    # for large regions so that the cost does not grow with the image.
    lo = pts.min(axis=0)
    cell = max(1.0, float((pts.max(axis=0) - lo).max()) / GRID_CELLS)
    grid = (pts - lo) / cell + 2.0
    w, h = (math.ceil(v) + 3 for v in grid.max(axis=0))
    filled = np.zeros((h, w), np.uint8)
    # Sub-pixel outline, rasterised with 8 fractional bits.
    poly = np.round(grid * 256.0).astype(np.int32)
    cv2.fillPoly(filled, [poly], 1, lineType=cv2.LINE_8, shift=8)
    region = filled.astype(bool)
    area = int(region.sum())
    if area == 0:
        return None
    depth = cv2.distanceTransform(filled, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    radius = ratio * float(depth.max())
    core = depth > radius
    if not core.any():
        return None
    # Erosion by the disk is `depth > radius`; of its pieces, the one holding the
    # deepest point is the head's, and dilating it by the same disk opens it.
    _, labels = cv2.connectedComponents(core.astype(np.uint8), connectivity=8)
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    head_core = labels == labels[deepest]
    opened = (_distance_to(head_core) <= radius) & region
    if opened.sum() >= (1.0 - MIN_REMOVED_SHARE) * area:
        return None
    near = _distance_to(opened)
    cols = np.clip(np.round(grid[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.round(grid[:, 1]).astype(int), 0, h - 1)
    keep = near[rows, cols] <= max(KEEP_TOLERANCE_PX / cell, 1.5)
    if keep.sum() < max(8, len(points) // 3):
        return None
    return keep
