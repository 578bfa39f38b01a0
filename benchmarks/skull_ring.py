"""How clearly the image, not the map, shows a skull along a fitted head.

A foetal head in the HC18 plane is bounded by the calvarium, a bright ridge in the
image; where the lateral walls run parallel to the beam they are faint, and there the
network's boundary is least sure. These features describe the ridge along a fitted
ellipse, in the image itself, as candidate inputs for the qc flag
(``benchmarks/flag_inputs.py``); ``benchmarks/cv_report.py`` adds them to the per-image
rows of held-out images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse, bilinear

#: Radii, as fractions of the ellipse's radius on each ray, sampled along 120 rays.
_RADII = np.round(np.linspace(0.3, 1.6, 66), 6)
_N_RAYS = 120
#: Where the ridge is looked for, and what it is compared with.
_RIDGE, _OUTSIDE, _INSIDE = (0.88, 1.12), (1.15, 1.5), (0.3, 0.8)


def ring_features(image: NDArray[np.uint8], ellipse: Ellipse) -> dict[str, float]:
    """The skull ridge along ``ellipse`` in ``image`` (both in original pixels).

    The image is smoothed (Gaussian, sigma 3 % of the minor semi-axis, at least 1.5
    px) so that speckle does not make a ridge, and sampled along 120 rays from the
    centre; rays that leave the image are left out (unless nearly all do). On each
    ray the ridge is the brightest sample within 0.88-1.12 of the radius, the outside
    the median within 1.15-1.5, the inside the median within 0.3-0.8.

    Returns:
        ``ring_contrast``: median over rays of ``ln((ridge + 1) / (outside + 1))``;
        ``ring_weak``: the lower quartile of that log ratio over rays (the faintest
        quarter of the wall); ``ring_inside``: median ``ln((inside + 1) / (outside + 1))``.

    """
    minor = max(min(ellipse.a, ellipse.b), 1.0)
    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), max(1.5, 0.03 * minor))
    h, w = img.shape
    t = np.linspace(0.0, 2.0 * math.pi, _N_RAYS, endpoint=False)
    u = ellipse.a * np.cos(t)[:, None] * _RADII
    v = ellipse.b * np.sin(t)[:, None] * _RADII
    ca, sa = math.cos(ellipse.angle), math.sin(ellipse.angle)
    x, y = ellipse.cx + ca * u - sa * v, ellipse.cy + sa * u + ca * v
    samples = bilinear(img, x.ravel(), y.ravel()).reshape(x.shape)
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).all(axis=1)
    if inside.sum() > 10:
        samples = samples[inside]

    def band(lo_hi: tuple[float, float]) -> NDArray[np.float64]:
        return samples[:, (_RADII >= lo_hi[0]) & (_RADII <= lo_hi[1])]

    outside = np.median(band(_OUTSIDE), axis=1) + 1.0
    contrast = np.log((band(_RIDGE).max(axis=1) + 1.0) / outside)
    return {
        "ring_contrast": float(np.median(contrast)),
        "ring_weak": float(np.quantile(contrast, 0.25)),
        "ring_inside": float(np.median(np.log((np.median(band(_INSIDE), axis=1) + 1.0) / outside))),
    }
