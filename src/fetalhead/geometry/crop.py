"""Boxes of an image: around a head ellipse (the head crop), or clear of it (a negative)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse, render_ellipse_mask


@dataclass(frozen=True)
class CropBox:
    """A box of whole pixels, ``[x0, x1) x [y0, y1)``, inside an image."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the box."""
        return self.y1 - self.y0, self.x1 - self.x0

    def is_inner_edge(self, image_hw: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
        """Which of the box's left, top, right, bottom edges lie inside the image."""
        h, w = image_hw
        return self.x0 > 0, self.y0 > 0, self.x1 < w, self.y1 < h


def head_crop_box(
    e: Ellipse,
    image_hw: tuple[int, int],
    net_hw: tuple[int, int],
    margin: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> CropBox:
    """The box that holds ``e`` with a margin, at the network's aspect ratio.

    The ellipse's bounding box is enlarged ``margin`` times about its centre,
    widened along one axis to the aspect of ``net_hw``, moved by ``shift`` (a
    fraction of the box's width and height) and cut to the image. So a head of
    any size fills about ``1 / margin`` of the network input along its tighter axis,
    unless the image edge clips the box.

    Args:
        e: The head's ellipse, in image pixels.
        image_hw: ``(height, width)`` of the image.
        net_hw: ``(height, width)`` of the network input.
        margin: Box size over the ellipse's bounding-box size (> 1: room around it).
        shift: Offset of the box centre from the ellipse centre, as fractions of the
            box's ``(width, height)`` (training jitter; 0 at inference).

    Returns:
        A box of at least 8 x 8 pixels where the image allows.

    """
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    half_w = margin * math.hypot(e.a * ca, e.b * sa)
    half_h = margin * math.hypot(e.a * sa, e.b * ca)
    aspect = net_hw[0] / net_hw[1]
    if half_h / half_w < aspect:
        half_h = half_w * aspect
    else:
        half_w = half_h / aspect
    cx = e.cx + shift[0] * 2.0 * half_w
    cy = e.cy + shift[1] * 2.0 * half_h
    h, w = image_hw
    x0 = max(0, math.floor(cx - half_w + 0.5))
    x1 = min(w, math.ceil(cx + half_w + 0.5))
    y0 = max(0, math.floor(cy - half_h + 0.5))
    y1 = min(h, math.ceil(cy + half_h + 0.5))
    if x1 - x0 < 8:
        x0, x1 = max(0, min(x0, w - 8)), min(w, max(x1, x0 + 8))
    if y1 - y0 < 8:
        y0, y1 = max(0, min(y0, h - 8)), min(h, max(y1, y0 + 8))
    return CropBox(x0, y0, x1, y1)


def _box_sums(
    table: NDArray[np.int64], y0: NDArray[np.int64], x0: NDArray[np.int64], bh: int, bw: int
) -> NDArray[np.int64]:
    """Sums over bh x bw boxes at corners (y0, x0) of a zero-padded summed-area table."""
    return table[y0 + bh, x0 + bw] - table[y0, x0 + bw] - table[y0 + bh, x0] + table[y0, x0]


def headless_box(
    image: NDArray[np.uint8],
    head: Ellipse,
    grow: float = 1.2,
    aspect: float = 800 / 540,
    min_frac: float = 0.25,
    min_fov: float = 0.6,
    step: int = 10,
) -> CropBox | None:
    """The widest box of a real scan that holds no part of its head, or ``None``.

    Other ultrasound content, cut from real foetal-head scans: a box of ``aspect``
    (width over height, the HC18 images' 800 / 540 by default) that does not touch the
    head's ellipse grown ``grow`` times about its centre, at least ``min_frac`` of the
    image wide, with at least ``min_fov`` of its pixels inside the field of view
    (brighter than 8). Widths are tried from 0.7 of the image width down in steps of
    0.05 of it; among the boxes of the widest that fits, the one most inside the field of view
    wins (the first, scanning rows then columns in ``step`` pixels, on a tie).

    Training shows such boxes, with an empty target, as hard negatives
    (``negative_fraction`` of :class:`fetalhead.training.TrainConfig`); the tests and
    ``benchmarks/nonhead_crops.py`` measure them as real ultrasound without a head.
    """
    h, w = image.shape
    mask = render_ellipse_mask(
        Ellipse(head.cx, head.cy, head.a * grow, head.b * grow, head.angle), (h, w)
    )
    head_sum = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    fov_sum = np.pad((image > 8).astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    for twentieths in range(14, math.ceil(min_frac * 20 - 1e-9) - 1, -1):
        bw = round(w * twentieths / 20)
        bh = round(bw / aspect)
        if bh > h or bh < 1:
            continue
        y0 = np.arange(0, h - bh + 1, step)[:, None]
        x0 = np.arange(0, w - bw + 1, step)[None, :]
        inside = _box_sums(fov_sum, y0, x0, bh, bw) / (bw * bh)
        fov = np.where(_box_sums(head_sum, y0, x0, bh, bw) == 0, inside, -1.0)
        i, j = np.unravel_index(int(np.argmax(fov)), fov.shape)
        if fov[i, j] >= min_fov:
            return CropBox(int(x0[0, j]), int(y0[i, 0]), int(x0[0, j]) + bw, int(y0[i, 0]) + bh)
    return None
