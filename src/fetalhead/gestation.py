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
    "intergrowth_2sd_range",
    "intergrowth_21st",
    "intergrowth_hc_standard",
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
#: The INTERGROWTH-21st fetal growth standard for HC (Papageorghiou et al., Lancet
#: 2014;384:869-879) gives the mean and SD of HC at each GA from 14 to 40 exact weeks.
INTERGROWTH_HC_STANDARD_WEEKS = (14.0, 40.0)


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


def intergrowth_hc_standard(weeks: float) -> tuple[float, float]:
    """Mean and SD of HC (mm) at a GA (exact weeks): the INTERGROWTH-21st growth standard.

    mean = -28.2849 + 1.69267 GA^2 - 0.397485 GA^2 ln GA and
    SD = 1.98735 + 0.0136772 GA^3 - 0.00726264 GA^3 ln GA + 0.000976253 GA^3 (ln GA)^2
    (Papageorghiou et al., Lancet 2014;384:869-879), defined for 14 to 40 weeks.

    Example: at 20 weeks, 172.48 and 7.44 mm; the standard's published table gives
    157.6, 172.5 and 187.4 mm for -2 SD, the mean and +2 SD.
    """
    ln = math.log(weeks)
    mean = -28.2849 + 1.69267 * weeks**2 - 0.397485 * weeks**2 * ln
    sd = 1.98735 + weeks**3 * (0.0136772 - 0.00726264 * ln + 0.000976253 * ln**2)
    return mean, sd


def _weeks_where(hc_mm: float, z: float) -> float:
    """The GA (weeks) at which ``hc_mm`` lies ``z`` SD from the standard's mean, or nan.

    ``mean + z SD`` rises with GA over the standard's 14-40 weeks at ``z = +/-2`` (as
    its table does), so the root is unique; nan when it lies outside those weeks.
    """
    lo, hi = INTERGROWTH_HC_STANDARD_WEEKS

    def at(weeks: float) -> float:
        mean, sd = intergrowth_hc_standard(weeks)
        return mean + z * sd - hc_mm

    if not (math.isfinite(hc_mm) and at(lo) <= 0.0 <= at(hi)):
        return float("nan")
    for _ in range(60):  # bisection to about 1e-17 weeks
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if at(mid) < 0.0 else (lo, mid)
    return 0.5 * (lo + hi)


def intergrowth_2sd_range(hc_low_mm: float, hc_high_mm: float) -> tuple[float, float] | None:
    """GA range (weeks) for an HC interval, with INTERGROWTH-21st's population spread.

    It runs from the youngest GA at which the interval's lower end is within 2 SD of
    the growth standard's mean HC (there it is +2 SD) to the oldest at which its upper
    end is (there it is -2 SD): :func:`intergrowth_hc_standard` inverted. This is the
    growth standard read backwards, not the prediction interval of the INTERGROWTH-21st
    dating formula (:func:`intergrowth_21st`), which could not be checked here. Pass
    the same HC twice for the population spread alone. ``None`` when either end falls
    outside the standard's 14-40 weeks.

    Example: 187.4 mm is +2 SD at 20 weeks in the standard's table, so a range for an
    HC of 187.4 mm starts at 20.0 weeks; 157.6 mm is -2 SD there, so one for 157.6 mm
    ends at 20.0 weeks.

    Raises:
        ValueError: If ``hc_low_mm`` is above ``hc_high_mm``.

    """
    if hc_low_mm > hc_high_mm:
        raise ValueError(f"the HC interval is reversed: {hc_low_mm} > {hc_high_mm} mm")
    low, high = _weeks_where(hc_low_mm, 2.0), _weeks_where(hc_high_mm, -2.0)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def trimester(ga_weeks: float) -> str:
    """Trimester label from gestational age (< 14, 14-28, >= 28 weeks)."""
    if ga_weeks < 14:
        return "first"
    return "second" if ga_weeks < 28 else "third"
