"""The head crop: a box around a head ellipse, at the network's aspect, inside the image."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fetalhead.geometry.ellipse import Ellipse


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
