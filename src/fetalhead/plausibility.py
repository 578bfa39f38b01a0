"""Is it a foetal head in ultrasound? Features of a found head and a fitted rejection rule.

The network segments anything round and bright: a ring drawn on black, a cardiac
view, a blank image's faint blob. Before any number is reported, the found head
is described by a few scale-free features of the image and the probability map,
and a logistic model fitted on HC18 heads against a generated corpus of
non-heads (``scripts/fit_nonhead.py``) decides whether it is one. What is not
a head gets ``no_head_found`` and no measures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse, render_ellipse_mask

#: Feature names, in the order the model's coefficients use.
FEATURES = ("confidence", "log_fit_residual", "speckle", "flat_fraction", "gray_levels")

#: The fitted rejection model shipped with fetalhead.
DEFAULT_MODEL = Path(__file__).parent / "weights" / "nonhead_rejector.json"


def _ellipse_scaled(e: Ellipse, f: float) -> Ellipse:
    return Ellipse(e.cx, e.cy, e.a * f, e.b * f, e.angle)


def head_features(
    image: NDArray[np.uint8],
    ellipse: Ellipse,
    contour: NDArray[np.float64],
    confidence: float,
) -> dict[str, float]:
    """Scale-free features of a found head, from the image and the fit.

    Args:
        image: The grayscale image measured (original pixels).
        ellipse: The fitted ellipse (original pixels).
        contour: The boundary points the ellipse was fitted to.
        confidence: Mean head probability inside the head.

    Returns:
        ``confidence``; ``log_fit_residual`` (log of the RMS distance of the
        boundary from the ellipse over the minor semi-axis, clipped to [-6, 1]);
        ``speckle`` (median local standard deviation inside the head over its mean
        level, clipped to 0.3: ultrasound is speckled, drawings are not);
        ``flat_fraction`` (share of pixels inside the head whose 3 x 3
        neighbourhood is constant); and ``gray_levels`` (distinct values inside the
        head / 256). Features are clipped so that the linear model never
        extrapolates far outside the range it was fitted on.

    """
    from fetalhead.geometry.ellipse import _geometric_residuals

    img = image.astype(np.float32)
    h, w = img.shape
    minor = max(min(ellipse.a, ellipse.b), 1.0)
    inner = render_ellipse_mask(_ellipse_scaled(ellipse, 0.85), (h, w)).astype(bool)
    if not inner.any():
        return dict.fromkeys(FEATURES, 0.0) | {"confidence": float(confidence)}
    mean = cv2.blur(img, (5, 5))
    local_sd = np.sqrt(np.maximum(cv2.blur(img * img, (5, 5)) - mean * mean, 0.0))
    kernel = np.ones((3, 3), np.uint8)
    flat = cv2.dilate(image, kernel) == cv2.erode(image, kernel)
    inside = img[inner]
    residuals = _geometric_residuals(ellipse, contour) if len(contour) else np.array([minor])
    rms = float(np.sqrt(np.mean(residuals**2)))
    return {
        "confidence": float(confidence),
        "log_fit_residual": min(max(math.log(max(rms, 1e-6) / minor), -6.0), 1.0),
        "speckle": min(float(np.median(local_sd[inner]) / (inside.mean() + 1.0)), 0.3),
        "flat_fraction": float(flat[inner].mean()),
        "gray_levels": len(np.unique(image[inner])) / 256.0,
    }


@dataclass(frozen=True)
class HeadRejector:
    """Logistic model: P(head) = sigmoid(b + sum w_i (x_i - mean_i) / sd_i).

    Attributes:
        coef: Weight per feature (standardised).
        intercept: Intercept.
        mean: Feature means of the fitting data.
        sd: Feature standard deviations of the fitting data.
        threshold: A found head with P(head) below it is rejected.
        provenance: How and on what the model was fitted, and its measured error rates.

    """

    coef: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    threshold: float
    provenance: dict

    def probability(self, features: dict[str, float]) -> float:
        """P(head) of a found head's features."""
        x = np.array([features[k] for k in FEATURES])
        z = self.intercept + float(np.dot(self.coef, (x - self.mean) / self.sd))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def is_head(self, features: dict[str, float]) -> bool:
        """Whether the found head is kept."""
        return self.probability(features) >= self.threshold

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "features": list(FEATURES),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "sd": list(self.sd),
            "threshold": self.threshold,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> HeadRejector:
        """Build from :meth:`to_dict` output; the feature list must match this version's."""
        if tuple(d["features"]) != FEATURES:
            raise ValueError(f"rejector features {d['features']} differ from {list(FEATURES)}")
        return cls(
            tuple(d["coef"]),
            float(d["intercept"]),
            tuple(d["mean"]),
            tuple(d["sd"]),
            float(d["threshold"]),
            dict(d.get("provenance", {})),
        )

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL) -> HeadRejector:
        """Load a fitted model (default: the shipped one)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
