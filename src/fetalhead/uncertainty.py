"""HC intervals: split-conformal, scaled by how hard the image looks.

For a calibration set of held-out images (the cross-validation folds), the
nonconformity score of image i is

    s_i = |HC_pred,i - HC_ref,i| / (HC_pred,i * u_i),
    u_i = 1 + b_fit * max(0, ln(r_i / r_0)) + b_border * border_i,

where ``r_i`` is the RMS distance of the boundary from the fitted ellipse over
the minor semi-axis (``r_0`` its calibration median) and ``border_i`` is 1 when
the field of view clips the head. Errors grow with head size, so the scale is
relative; a ragged or clipped boundary widens it. With ``q`` the
``ceil((n + 1) * level) / n`` empirical quantile of the scores, the interval
``HC_pred * (1 -/+ q * u)`` covers the reference with probability at least
``level`` for exchangeable data (Vovk et al. 2005; Lei et al. 2018). The quantile
is taken separately in each band of predicted HC (the trimester its Hadlock GA
falls in: Mondrian conformal prediction), so that small first-trimester heads,
whose relative errors are larger, are covered as often as the others. ``b_fit``
and ``b_border`` are chosen on the calibration set, from a small grid, for the
smallest mean width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import hadlock_1984, trimester

BANDS = ("first", "second", "third")

CONFORMAL_FEATURES = ("rel_rms", "border")
_GRID_FIT = (0.0, 0.25, 0.5, 1.0, 2.0)
_GRID_BORDER = (0.0, 0.5, 1.0, 2.0)


def interval_features(
    ellipse: Ellipse,
    rms_px: float,
    confidence: float,
    touches_border: bool,
    hc_mm: float | None = None,
) -> dict[str, Any]:
    """The per-image difficulty the interval is scaled by, and its HC band."""
    minor = max(min(ellipse.a, ellipse.b), 1.0)
    return {
        "rel_rms": max(rms_px / minor, 1e-6),
        "border": 1.0 if touches_border else 0.0,
        "confidence": float(confidence),
        "band": band_of(hc_mm) if hc_mm is not None else None,
    }


def band_of(hc_mm: float) -> str:
    """The HC band of a predicted HC: the trimester of its Hadlock GA."""
    return trimester(hadlock_1984(hc_mm).weeks)


@dataclass(frozen=True)
class IntervalModel:
    """A calibrated HC interval (see the module docstring).

    Attributes:
        level: Nominal coverage, e.g. 0.9.
        q: Conformal quantile of the relative, scaled scores, per HC band.
        r0: Calibration median of ``rel_rms``.
        b_fit: Weight of the boundary-fit term.
        b_border: Weight of the clipped-head term.
        n_calibration: Images it was calibrated on.

    """

    level: float
    q: dict[str, float]
    r0: float
    b_fit: float
    b_border: float
    n_calibration: int

    def scale(self, features: dict[str, Any]) -> float:
        """``q * u``: the interval's relative half-width for an image of a band."""
        u = 1.0 + self.b_fit * max(0.0, math.log(float(features["rel_rms"]) / self.r0))
        u += self.b_border * float(features["border"])
        return self.q[features["band"]] * u

    def interval(self, hc_mm: float, features: dict[str, Any]) -> tuple[float, float]:
        """``(low, high)`` in mm."""
        half = hc_mm * self.scale({**features, "band": band_of(hc_mm)})
        return hc_mm - half, hc_mm + half

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's ``meta["calibration"]``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntervalModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _quantile(scores: np.ndarray, level: float) -> float:
    n = len(scores)
    k = min(n, math.ceil((n + 1) * level))
    return float(np.sort(scores)[k - 1])


def fit_interval(rows: list[dict[str, Any]], level: float = 0.9) -> IntervalModel:
    """Calibrate on held-out rows with ``plain_hc_mm``, ``hc_ref_mm`` and the features.

    Raises:
        ValueError: If a band has fewer than 20 usable rows or ``level`` is not in (0, 1).

    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    use = [r for r in rows if math.isfinite(r.get("plain_hc_mm", math.nan)) and "rel_rms" in r]
    hc = np.array([r["plain_hc_mm"] for r in use], float)
    band = np.array([band_of(h) for h in hc])
    for b in BANDS:
        if (band == b).sum() < 20:
            raise ValueError(
                f"need at least 20 calibration images per HC band, got {(band == b).sum()} ({b})"
            )
    err = np.abs(hc - np.array([r["hc_ref_mm"] for r in use], float))
    rel = np.array([r["rel_rms"] for r in use], float)
    border = np.array([r["border"] for r in use], float)
    r0 = float(np.median(rel))
    candidates = []
    for bf in _GRID_FIT:
        for bb in _GRID_BORDER:
            u = 1.0 + bf * np.maximum(0.0, np.log(rel / r0)) + bb * border
            scores = err / (hc * u)
            q = {b: _quantile(scores[band == b], level) for b in BANDS}
            width = float(np.mean(2 * np.array([q[b] for b in band]) * u * hc))
            candidates.append((width, IntervalModel(level, q, r0, bf, bb, len(use))))
    # The narrowest on average; on ties the first (simplest) in grid order.
    return min(candidates, key=lambda c: c[0])[1]


#: Levels the shipped calibration provides.
LEVELS = (0.8, 0.9, 0.95)


def interval_model(meta: dict[str, Any], level: float) -> IntervalModel | None:
    """The calibrated interval a checkpoint carries for ``level``, if any.

    Raises:
        ValueError: If the checkpoint has a calibration but not for this level.

    """
    stored = meta.get("calibration", {}).get("hc_interval")
    if not stored:
        return None
    by_level = {float(d["level"]): d for d in stored}
    if float(level) not in by_level:
        raise ValueError(
            f"interval level {level} is not calibrated in these weights; "
            f"choose one of {sorted(by_level)}"
        )
    return IntervalModel.from_dict(by_level[float(level)])


@dataclass(frozen=True)
class FlagRule:
    """Flag ``uncertain_hc`` when the calibrated interval is wide, in millimetres.

    Large errors are judged in mm (|HC error| > 5 mm), so the flag is too: the
    interval's half-width in mm grows with head size and with a ragged or clipped
    boundary.

    Attributes:
        interval: The calibrated interval whose width is judged.
        max_halfwidth_mm: Largest half-width still not flagged.

    """

    interval: IntervalModel
    max_halfwidth_mm: float

    def flags(self, hc_mm: float, features: dict[str, Any]) -> bool:
        """Whether an image with this HC and these features should be checked by a person."""
        return hc_mm * self.interval.scale(features) > self.max_halfwidth_mm


def flag_rule(meta: dict[str, Any]) -> FlagRule | None:
    """The qc flag a checkpoint's calibration defines, if any."""
    rule = meta.get("calibration", {}).get("qc_flag")
    if not rule:
        return None
    model = interval_model(meta, float(rule["level"]))
    return FlagRule(model, float(rule["max_halfwidth_mm"])) if model else None
