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

With ``scale="learned"`` (:func:`fit_interval`), ``u_i = exp(w . z_i)`` instead, the
expected relative error given the standardised qc-flag inputs ``z_i``
(:data:`FLAG_INPUTS`: head size, fit residual, clipping, map confidence and the map's
profile across the boundary), fitted by a ridge log-link regression of
``|error_i| / HC_pred,i`` on them (:func:`log_link_regression`). A regression of the
log of the error would shrink the ratio between easy and hard images, since errors
near zero weigh heavily in the log. The conformal
quantile is taken the same way, so the interval is calibrated either way; the
learned scale is narrower where the map looks easy and wider where it looks hard.
It should be calibrated on held-out maps of the recipe that made the weights: its
inputs read how sharp a map looks, and a sharper recipe's errors are not smaller in
proportion (``benchmarks/interval_scale.py``).

The qc flag ``uncertain_hc`` is separate (:class:`FlagModel`): a logistic
regression of "|HC error| > 5 mm" on the same difficulty scores, the head's size
and how clearly the map shows the boundary (:func:`profile_features`), fitted to
the folds' held-out images and cut so that a set share of them is flagged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse, bilinear
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


IntervalScale = Literal["residual", "learned"]


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
        learned: For a learned scale, the regression on :data:`FLAG_INPUTS`
            (``inputs``, ``mean``, ``std``, ``weights``); ``None`` for the
            residual scale, which uses ``r0``, ``b_fit`` and ``b_border``.

    """

    level: float
    q: dict[str, float]
    r0: float
    b_fit: float
    b_border: float
    n_calibration: int
    learned: dict[str, list[float] | list[str]] | None = None

    def difficulty(self, hc_mm: float, features: dict[str, Any]) -> float:
        """``u``, the image's difficulty: the factor its band's quantile is scaled by."""
        if self.learned is not None:
            mean, std = np.array(self.learned["mean"]), np.array(self.learned["std"])
            z = (flag_inputs(hc_mm, features) - mean) / std
            return float(np.exp(z @ np.array(self.learned["weights"])))
        u = 1.0 + self.b_fit * max(0.0, math.log(float(features["rel_rms"]) / self.r0))
        return u + self.b_border * float(features["border"])

    def scale(self, hc_mm: float, features: dict[str, Any]) -> float:
        """``q * u``: the relative half-width of the interval around ``hc_mm``."""
        return self.q[band_of(hc_mm)] * self.difficulty(hc_mm, features)

    def interval(self, hc_mm: float, features: dict[str, Any]) -> tuple[float, float]:
        """``(low, high)`` in mm."""
        half = hc_mm * self.scale(hc_mm, features)
        return hc_mm - half, hc_mm + half

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's ``meta["calibration"]``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntervalModel:
        """Inverse of :meth:`to_dict` (a checkpoint without ``learned`` has the residual scale).

        Raises:
            ValueError: If a learned scale reads other inputs than this version's.

        """
        learned = d.get("learned")
        if learned is not None and tuple(learned["inputs"]) != FLAG_INPUTS:
            raise ValueError(
                f"the weights' HC interval reads {learned['inputs']}, this fetalhead "
                f"{list(FLAG_INPUTS)}: recalibrate the weights (scripts/calibrate_weights.py)"
            )
        fields = [k for k in cls.__dataclass_fields__ if k != "learned"]
        return cls(**{k: d[k] for k in fields}, learned=learned)


def log_link_regression(
    z: NDArray[np.float64], y: NDArray[np.float64], l2: float = 1.0
) -> NDArray[np.float64]:
    """``w`` with ``E[y | z] = c * exp(z @ w)``: Poisson quasi-likelihood, ridge on ``w[1:]``.

    ``z``'s first column is the intercept (not penalised); ``y >= 0``. Solved by
    Newton's method on ``y`` over its mean, whose fit is exact for the intercept.
    """
    yn = y / max(float(np.mean(y)), 1e-12)
    penalty = l2 * np.diag(np.r_[0.0, np.ones(z.shape[1] - 1)])
    w = np.zeros(z.shape[1])
    for _ in range(100):
        mu = np.exp(np.clip(z @ w, -30.0, 30.0))
        step = np.linalg.solve((z * mu[:, None]).T @ z + penalty, z.T @ (mu - yn) + penalty @ w)
        w -= np.clip(step, -1.0, 1.0)
        if np.abs(step).max() < 1e-9:
            break
    return w


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) * level)``-th smallest of ``n`` scores."""
    n = len(scores)
    k = min(n, math.ceil((n + 1) * level))
    return float(np.sort(scores)[k - 1])


def fit_interval(
    rows: list[dict[str, Any]], level: float = 0.9, scale: IntervalScale = "residual"
) -> IntervalModel:
    """Calibrate on held-out rows with ``plain_hc_mm``, ``hc_ref_mm`` and the features.

    Args:
        rows: Held-out rows; the learned scale also needs the profile features
            (:func:`profile_features`) and ``confidence``.
        level: Nominal coverage.
        scale: ``"residual"`` (fit residual and clipping, from a grid) or
            ``"learned"`` (regressed on the qc-flag inputs); see the module docstring.

    Raises:
        ValueError: If a band has fewer than 20 usable rows, ``level`` is not in
            (0, 1) or ``scale`` is unknown.

    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if scale not in get_args(IntervalScale):
        raise ValueError(f"scale must be one of {get_args(IntervalScale)}, got {scale!r}")
    need = ("rel_rms", "blur") if scale == "learned" else ("rel_rms",)
    use = [
        r
        for r in rows
        if math.isfinite(r.get("plain_hc_mm", math.nan)) and all(k in r for k in need)
    ]
    hc = np.array([r["plain_hc_mm"] for r in use], float)
    band = np.array([band_of(h) for h in hc])
    for b in BANDS:
        if (band == b).sum() < 20:
            raise ValueError(
                f"need at least 20 calibration images per HC band, got {(band == b).sum()} ({b})"
            )
    err = np.abs(hc - np.array([r["hc_ref_mm"] for r in use], float))
    rel = np.array([r["rel_rms"] for r in use], float)
    r0 = float(np.median(rel))

    def calibrated(u: NDArray[np.float64], **kw: Any) -> IntervalModel:
        scores = err / (hc * u)
        q = {b: conformal_quantile(scores[band == b], level) for b in BANDS}
        return IntervalModel(level, q, r0, n_calibration=len(use), **kw)

    if scale == "learned":
        x = np.array([flag_inputs(r["plain_hc_mm"], r) for r in use])
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = np.c_[np.ones(len(x)), (x - mean) / std]
        w = log_link_regression(z, err / hc)
        learned = {
            "inputs": list(FLAG_INPUTS),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "weights": [float(v) for v in w[1:]],  # the intercept is absorbed by q
        }
        return calibrated(np.exp(z[:, 1:] @ w[1:]), b_fit=0.0, b_border=0.0, learned=learned)
    border = np.array([r["border"] for r in use], float)
    candidates = []
    for bf in _GRID_FIT:
        for bb in _GRID_BORDER:
            u = 1.0 + bf * np.maximum(0.0, np.log(rel / r0)) + bb * border
            model = calibrated(u, b_fit=bf, b_border=bb)
            width = float(np.mean(2 * np.array([model.q[b] for b in band]) * u * hc))
            candidates.append((width, model))
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


#: What the qc flag calls a large error, in mm of HC.
LARGE_ERROR_MM = 5.0

#: Radii, as fractions of the fitted ellipse, along which the map is sampled.
_RADII = np.round(np.linspace(0.6, 1.4, 81), 6)
#: Rays from the centre at which the map is sampled.
_N_RAYS = 180


def profile_features(
    prob: NDArray[np.floating], scale: tuple[float, float], ellipse: Ellipse, level: float
) -> dict[str, float]:
    """How clearly a probability map shows the boundary of the ellipse fitted to it.

    The map is sampled along 180 rays from the ellipse's centre, from 0.6 to 1.4
    times the ellipse's radius on each ray. Rays that leave the map are left out
    (unless nearly all do).

    Args:
        prob: The network-resolution probability map of the image region
            (:meth:`Letterbox.crop` of the network output).
        scale: ``(sx, sy)``, original to map pixels (:attr:`Letterbox.scale`).
        ellipse: The fitted head, in original pixels.
        level: The iso-probability taken as the boundary.

    Returns:
        ``blur``: median radial distance, as a fraction of the radius, between
        where the map falls below 0.9 and below 0.2 (a faint wall is a wide
        transition); ``hole``: mean ``1 - p`` from 0.6 to 0.9 of the radius;
        ``spill``: mean ``p`` from 1.1 to 1.3 of the radius; ``unsupported``:
        the share of rays whose outermost crossing of ``level`` lies inside 0.86
        of the radius or beyond 1.34 (near the end of the sampled range).

    """
    p = np.asarray(prob, dtype=np.float32)
    h, w = p.shape
    sx, sy = scale
    t = np.linspace(0.0, 2.0 * math.pi, _N_RAYS, endpoint=False)
    u = ellipse.a * np.cos(t)[:, None] * _RADII
    v = ellipse.b * np.sin(t)[:, None] * _RADII
    ca, sa = math.cos(ellipse.angle), math.sin(ellipse.angle)
    # Original pixel centres to map pixel centres.
    x = (ellipse.cx + ca * u - sa * v + 0.5) * sx - 0.5
    y = (ellipse.cy + sa * u + ca * v + 0.5) * sy - 0.5
    samples = bilinear(p, x.ravel(), y.ravel()).reshape(x.shape)
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).all(axis=1)
    if inside.sum() > 10:
        samples = samples[inside]

    def outermost(threshold: float) -> NDArray[np.float64]:
        above = samples >= threshold
        last = above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)
        return np.where(above.any(axis=1), _RADII[last], _RADII[0])

    crossing = outermost(level)
    return {
        "blur": float(np.median(outermost(0.2) - outermost(0.9))),
        "hole": float(1.0 - samples[:, (_RADII > 0.6) & (_RADII < 0.9)].mean()),
        "spill": float(samples[:, (_RADII > 1.1) & (_RADII < 1.3)].mean()),
        "unsupported": float(np.mean((crossing <= 0.86) | (crossing >= 1.34))),
    }


#: What the flag model reads, in this order (see :func:`flag_inputs`).
FLAG_INPUTS = (
    "log_hc",
    "log_hc_squared",
    "log_rel_rms",
    "border",
    "log_doubt",
    "log_blur",
    "hole",
    "spill",
    "unsupported",
)


def flag_inputs(hc_mm: float, features: dict[str, Any]) -> NDArray[np.float64]:
    """The flag model's inputs for one image: :data:`FLAG_INPUTS`.

    ``log_doubt`` is ``ln(1 - confidence + 1e-4)``; large errors are likelier for
    small and for large heads, so ``ln HC`` enters with its square.
    """
    log_hc = math.log(hc_mm)
    return np.array(
        [
            log_hc,
            log_hc**2,
            math.log(float(features["rel_rms"])),
            float(features["border"]),
            math.log(1.0 - float(features["confidence"]) + 1e-4),
            math.log(float(features["blur"]) + 0.01),
            float(features["hole"]),
            float(features["spill"]),
            float(features["unsupported"]),
        ]
    )


@dataclass(frozen=True)
class FlagModel:
    """Flag ``uncertain_hc``: logistic odds of a large HC error, cut at a calibrated share.

    A logistic regression of ``|HC error| > large_error_mm`` on :data:`FLAG_INPUTS`
    (standardised, ridge penalty 1), fitted to held-out images of the
    cross-validation folds. ``threshold`` is the score above which the share
    ``share`` of those images lies, so about that share of similar images is
    flagged; ``scripts/calibrate_weights.py`` may move it to the same quantile of
    the shipped weights' own scores on unlabelled images. A head outside the range
    of predicted HC it was fitted on is always flagged: there the model would
    extrapolate.

    Attributes:
        mean: Inputs' calibration means.
        std: Inputs' calibration standard deviations.
        weights: Coefficients of the standardised inputs.
        bias: Intercept.
        threshold: Log-odds above which an image is flagged.
        share: Share of the calibration images flagged.
        large_error_mm: What a large error is.
        n_calibration: Images it was fitted to.
        hc_range_mm: Smallest and largest predicted HC it was fitted on.

    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    share: float
    large_error_mm: float
    n_calibration: int
    hc_range_mm: tuple[float, float]

    def score(self, hc_mm: float, features: dict[str, Any]) -> float:
        """Log-odds that this image's HC is off by more than ``large_error_mm``."""
        z = (flag_inputs(hc_mm, features) - np.array(self.mean)) / np.array(self.std)
        return float(self.bias + z @ np.array(self.weights))

    def flags(self, hc_mm: float, features: dict[str, Any]) -> bool:
        """Whether an image with this HC and these features should be checked by a person."""
        return self.decide(hc_mm, self.score(hc_mm, features))

    def decide(self, hc_mm: float, score: float) -> bool:
        """Whether an image with this HC and this :meth:`score` is flagged."""
        low, high = self.hc_range_mm
        return not low <= hc_mm <= high or score > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's ``meta["calibration"]["qc_flag"]``."""
        return {"inputs": list(FLAG_INPUTS), **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlagModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If the stored model reads other inputs than this version's.

        """
        if tuple(d.get("inputs", ())) != FLAG_INPUTS:
            raise ValueError(
                f"the weights' qc flag reads {d.get('inputs')}, this fetalhead {list(FLAG_INPUTS)}:"
                " recalibrate the weights (scripts/calibrate_weights.py)"
            )
        values = {k: d[k] for k in cls.__dataclass_fields__}
        values["hc_range_mm"] = tuple(values["hc_range_mm"])
        return cls(**values)


def ridge_logistic(
    x: NDArray[np.float64], y: NDArray[np.float64], l2: float
) -> NDArray[np.float64]:
    """Ridge logistic regression by Newton's method; returns ``[bias, *weights]``."""
    z = np.c_[np.ones(len(x)), x]
    penalty = l2 * np.diag(np.r_[0.0, np.ones(x.shape[1])])
    beta = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-z @ beta))
        step = np.linalg.solve(
            (z * (p * (1 - p))[:, None]).T @ z + penalty, z.T @ (p - y) + penalty @ beta
        )
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def fit_flag(
    rows: list[dict[str, Any]],
    share: float = 0.1,
    large_error_mm: float = LARGE_ERROR_MM,
    error_hc_key: str = "plain_hc_mm",
) -> FlagModel:
    """Fit the flag to held-out rows with ``plain_hc_mm``, ``hc_ref_mm`` and the features.

    The inputs are read with ``plain_hc_mm`` (the HC of the fit the features describe);
    "a large error" is that of ``row[error_hc_key]``, by default the same HC, or for
    example the HC that ``predict`` reports after the shape prior.

    Raises:
        ValueError: If ``share`` is not in (0, 1) or fewer than 5 rows have a large error.

    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    use = [
        r
        for r in rows
        if math.isfinite(r.get("plain_hc_mm", math.nan))
        and math.isfinite(r.get(error_hc_key, math.nan))
        and "blur" in r
    ]
    x = np.array([flag_inputs(r["plain_hc_mm"], r) for r in use])
    y = np.array([abs(r[error_hc_key] - r["hc_ref_mm"]) > large_error_mm for r in use], float)
    if y.sum() < 5:
        raise ValueError(f"need at least 5 calibration images with a large error, got {y.sum():g}")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    beta = ridge_logistic((x - mean) / std, y, l2=1.0)
    scores = beta[0] + ((x - mean) / std) @ beta[1:]
    return FlagModel(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        weights=tuple(float(v) for v in beta[1:]),
        bias=float(beta[0]),
        threshold=float(np.quantile(scores, 1.0 - share)),
        share=share,
        large_error_mm=large_error_mm,
        n_calibration=len(use),
        hc_range_mm=(min(r["plain_hc_mm"] for r in use), max(r["plain_hc_mm"] for r in use)),
    )


def flag_model(meta: dict[str, Any]) -> FlagModel | None:
    """The qc flag a checkpoint's calibration defines, if any."""
    stored = meta.get("calibration", {}).get("qc_flag")
    return FlagModel.from_dict(stored) if stored else None
