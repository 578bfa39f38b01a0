"""The letterbox: aspect-preserving resize between original and network pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse


@dataclass(frozen=True)
class Letterbox:
    """Aspect-preserving resize of an image into a fixed network input.

    The image is resized by ``(sx, sy)`` (equal up to rounding) and placed at
    ``(pad_x, pad_y)`` inside an ``out_h x out_w`` canvas of zeros.
    """

    in_h: int
    in_w: int
    out_h: int
    out_w: int
    keep_aspect: bool = True

    @property
    def resized(self) -> tuple[int, int]:
        """``(h, w)`` of the resized image inside the canvas."""
        if not self.keep_aspect:
            return self.out_h, self.out_w
        s = min(self.out_h / self.in_h, self.out_w / self.in_w)
        return max(1, round(self.in_h * s)), max(1, round(self.in_w * s))

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)`` from original to network pixels."""
        h, w = self.resized
        return w / self.in_w, h / self.in_h

    def mm_per_pixel(self, pixel_size_mm: float) -> float:
        """The mm per network pixel of an image with ``pixel_size_mm`` pixels.

        The geometric mean over the two axes (the same for a letterbox, which keeps
        the aspect ratio, up to the rounding of the resized size).
        """
        sx, sy = self.scale
        return pixel_size_mm / float(np.sqrt(sx * sy))

    @property
    def pad(self) -> tuple[int, int]:
        """``(pad_x, pad_y)`` offset of the resized image in the canvas."""
        h, w = self.resized
        return (self.out_w - w) // 2, (self.out_h - h) // 2

    def apply(self, image: NDArray, interpolation: int = cv2.INTER_AREA) -> NDArray:
        """Resize and pad a 2-D array into the network canvas."""
        h, w = self.resized
        small = cv2.resize(image, (w, h), interpolation=interpolation)
        out = np.zeros((self.out_h, self.out_w), dtype=small.dtype)
        px, py = self.pad
        out[py : py + h, px : px + w] = small
        return out

    def crop(self, net_map: NDArray) -> NDArray:
        """Cut the resized-image region out of a network-sized map."""
        h, w = self.resized
        px, py = self.pad
        return net_map[..., py : py + h, px : px + w]

    def to_original(self, xy: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map ``(x, y)`` network pixel coordinates to original pixels."""
        sx, sy = self.scale
        px, py = self.pad
        out = np.asarray(xy, dtype=np.float64).copy()
        out[:, 0] = (out[:, 0] - px + 0.5) / sx - 0.5
        out[:, 1] = (out[:, 1] - py + 0.5) / sy - 0.5
        return out

    def ellipse_to_net(self, e: Ellipse) -> Ellipse:
        """Map an ellipse from original to network pixel coordinates."""
        sx, sy = self.scale
        px, py = self.pad
        s = e.scaled(sx, sy)
        return Ellipse(s.cx + 0.5 * sx - 0.5 + px, s.cy + 0.5 * sy - 0.5 + py, s.a, s.b, s.angle)
