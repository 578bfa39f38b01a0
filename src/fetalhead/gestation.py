"""Gestational age from head circumference.

Two published formulas are provided. Each reports the range of gestational
age over which it was derived; a value outside it is returned with
``in_range=False`` so that nothing is extrapolated silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "GAEstimate",
    "format_weeks_days",
    "format_weeks_days_range",
    "hadlock_2sd_range",
    "hadlock_1984",
    "intergrowth_21st",
]

#: Hadlock et al. 1984 (Radiology 152:497-501) derived its formulas on foetuses
#: of 14 to 42 weeks.
HADLOCK_RANGE_WEEKS = (14.0, 42.0)
#: INTERGROWTH-21st HC dating (Papageorghiou et al., Ultrasound Obstet Gynecol
#: 2016;48:719-726) covers 14+0 to 40+6 weeks.
INTERGROWTH_RANGE_WEEKS = (14.0, 40.0 + 6.0 / 7.0)
#: Population variability of menstrual age estimated from HC in the second and third
#: trimesters: +/-8 % of the estimate (2 SD), from the table "Methods for determining
#: menstrual age" (adapted from F. P. Hadlock and J. D. Bowie) as reproduced at
#: https://radiologykey.com/measurements-frequently-used-to-estimate-gestational-age-and-fetal-biometry/
#: A secondary source: the banded +/-2 SD table of Hadlock et al. (AJR 1982;138:649-653)
#: could not be checked here, so it is not used.
HADLOCK_2SD_FRACTION = 0.08


@dataclass(frozen=True)
class GAEstimate:
    """A gestational-age estimate.

    Attributes:
        weeks: Estimated gestational age in weeks (``nan`` if HC is not positive).
        in_range: True when ``weeks`` lies inside the formula's validity range.
        formula: Name of the formula.
        valid_range_weeks: The formula's validity range in weeks.

    """

    weeks: float
    in_range: bool
    formula: str
    valid_range_weeks: tuple[float, float]

    @property
    def days(self) -> float:
        """Gestational age in days."""
        return self.weeks * 7.0

    @property
    def weeks_days(self) -> str:
        """The age as clinicians write it, completed weeks and days: ``20w3d`` (or ``-``)."""
        return format_weeks_days(self.weeks)


def format_weeks_days(weeks: float) -> str:
    """Completed weeks and days, ``20w3d``: days are rounded to the nearest whole day.

    Example: 20.43 weeks is 143.01 days, 20 weeks and 3 days: ``20w3d``.
    """
    if not math.isfinite(weeks) or weeks < 0:
        return "-"
    days = round(weeks * 7.0)
    return f"{days // 7}w{days % 7}d"


def format_weeks_days_range(low: float | None, high: float | None) -> str:
    """A GA range as completed weeks and days, ``20w3d-24w6d``, or ``-`` without one."""
    if low is None or high is None:
        return "-"
    return f"{format_weeks_days(low)}-{format_weeks_days(high)}"


def _estimate(weeks: float, formula: str, rng: tuple[float, float]) -> GAEstimate:
    ok = math.isfinite(weeks) and rng[0] <= weeks <= rng[1]
    return GAEstimate(weeks, ok, formula, rng)


def hadlock_1984(hc_mm: float) -> GAEstimate:
    """Hadlock 1984: GA (weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm."""
    if not (math.isfinite(hc_mm) and hc_mm > 0):
        return _estimate(float("nan"), "hadlock_1984", HADLOCK_RANGE_WEEKS)
    hc = hc_mm / 10.0
    return _estimate(8.96 + 0.540 * hc + 0.0003 * hc**3, "hadlock_1984", HADLOCK_RANGE_WEEKS)


def hadlock_2sd_range(hc_low_mm: float, hc_high_mm: float) -> tuple[float, float]:
    """GA range (weeks) for an HC interval, with Hadlock's population variability.

    The HC interval is the measurement's uncertainty; at any HC, the population's
    GA spreads by +/-8 % of the estimate (2 SD, :data:`HADLOCK_2SD_FRACTION`). The
    range runs from 8 % below the GA of the interval's lower end to 8 % above the
    GA of its upper end, so it holds both errors at their extremes. Pass the same
    HC twice for the population spread alone.

    Example: HC 200 to 210 mm gives Hadlock GA 22.16 and 23.08 weeks, so the range
    is 0.92 * 22.16 = 20.39 to 1.08 * 23.08 = 24.92 weeks.
    """
    low, high = hadlock_1984(hc_low_mm).weeks, hadlock_1984(hc_high_mm).weeks
    return low * (1.0 - HADLOCK_2SD_FRACTION), high * (1.0 + HADLOCK_2SD_FRACTION)


def intergrowth_21st(hc_mm: float) -> GAEstimate:
    """INTERGROWTH-21st: GA (days) = exp(0.05970 (ln HC)^2 + 6.409e-9 HC^3 + 3.3258), HC in mm."""
    if not (math.isfinite(hc_mm) and hc_mm > 0):
        return _estimate(float("nan"), "intergrowth_21st", INTERGROWTH_RANGE_WEEKS)
    days = math.exp(0.05970 * math.log(hc_mm) ** 2 + 0.000000006409 * hc_mm**3 + 3.3258)
    return _estimate(days / 7.0, "intergrowth_21st", INTERGROWTH_RANGE_WEEKS)


def trimester(ga_weeks: float) -> str:
    """Trimester label from gestational age (< 14, 14-28, >= 28 weeks)."""
    if ga_weeks < 14:
        return "first"
    return "second" if ga_weeks < 28 else "third"
