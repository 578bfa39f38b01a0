import math

import pytest

from fetalhead.gestation import (
    format_weeks_days,
    format_weeks_days_range,
    hadlock_2sd_range,
    hadlock_1984,
    intergrowth_2sd_range,
    intergrowth_21st,
    intergrowth_hc_standard,
)


def test_intergrowth_worked_example() -> None:
    # HC = 250 mm gives 189.8 days (Papageorghiou et al. 2016 formula).
    ga = intergrowth_21st(250.0)
    assert ga.days == pytest.approx(189.8, abs=0.05)
    assert ga.in_range


# Hadlock 1984: GA (weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm; worked by hand:
# 10 cm: 8.96 + 5.4 + 0.3 = 14.66; 20 cm: 8.96 + 10.8 + 2.4 = 22.16;
# 25 cm: 8.96 + 13.5 + 4.6875 = 27.1475; 30 cm: 8.96 + 16.2 + 8.1 = 33.26.
@pytest.mark.parametrize(
    ("hc_mm", "weeks"), [(100.0, 14.66), (200.0, 22.16), (250.0, 27.1475), (300.0, 33.26)]
)
def test_hadlock_formula(hc_mm: float, weeks: float) -> None:
    ga = hadlock_1984(hc_mm)
    assert ga.weeks == pytest.approx(weeks, abs=1e-9)
    assert ga.in_range and ga.formula == "hadlock_1984"


# INTERGROWTH-21st: GA (days) = exp(0.05970 (ln HC)^2 + 0.000000006409 HC^3 + 3.3258), HC in
# mm; by hand: 150 mm: ln = 5.010635, 0.0597 * 25.10647 + 0.021630 + 3.3258 = 4.846286 -> 127.26
# days; 300 mm: ln = 5.703782, 0.0597 * 32.53313 + 0.173043 + 3.3258 = 5.441071 -> 230.69 days.
@pytest.mark.parametrize(("hc_mm", "days"), [(150.0, 127.26), (300.0, 230.69)])
def test_intergrowth_formula(hc_mm: float, days: float) -> None:
    assert intergrowth_21st(hc_mm).days == pytest.approx(days, abs=0.01)


@pytest.mark.parametrize("fn", [hadlock_1984, intergrowth_21st])
def test_out_of_range_is_flagged_not_hidden(fn) -> None:
    small = fn(40.0)  # about 12 weeks
    assert small.weeks < 14 and not small.in_range
    big = fn(400.0)
    assert big.weeks > big.valid_range_weeks[1] and not big.in_range


@pytest.mark.parametrize("fn", [hadlock_1984, intergrowth_21st])
@pytest.mark.parametrize("hc", [0.0, -5.0, float("nan")])
def test_invalid_hc_gives_nan(fn, hc) -> None:
    ga = fn(hc)
    assert math.isnan(ga.weeks) and not ga.in_range


def test_formulas_agree_mid_pregnancy() -> None:
    for hc in (120, 200, 280):
        assert abs(hadlock_1984(hc).weeks - intergrowth_21st(hc).weeks) < 1.5


@pytest.mark.parametrize(
    ("weeks", "text"),
    [
        (20.43, "20w3d"),  # 143.01 days
        (20.0, "20w0d"),
        (20.99, "21w0d"),  # 146.93 days round to 147: 21 weeks
        (39.6, "39w4d"),  # 277.2 days: 277 = 39 * 7 + 4
        (14.0 + 6 / 7, "14w6d"),
        (float("nan"), "-"),
    ],
)
def test_weeks_days(weeks: float, text: str) -> None:
    assert format_weeks_days(weeks) == text


def test_weeks_days_range() -> None:
    # 20.39 weeks = 142.73 days -> 20w3d; 24.92 weeks = 174.44 days -> 24w6d.
    assert format_weeks_days_range(20.39, 24.92) == "20w3d-24w6d"
    assert format_weeks_days_range(None, 24.92) == "-"


def test_estimates_carry_weeks_days() -> None:
    # 250 mm by Hadlock: 27.1475 weeks = 190.03 days = 27 weeks 1 day.
    assert hadlock_1984(250.0).weeks_days == "27w1d"


def test_hadlock_2sd_range_worked_example() -> None:
    # HC 200 and 210 mm: Hadlock GA 22.16 and 8.96 + 11.34 + 0.0003 * 9261 = 23.0783 weeks;
    # 8 % below the first and above the second: 20.3872 and 24.924564 weeks.
    low, high = hadlock_2sd_range(200.0, 210.0)
    assert low == pytest.approx(20.3872, abs=1e-9)
    assert high == pytest.approx(24.924564, abs=1e-9)
    # The population spread alone at HC 300 mm (33.26 weeks): 30.5992 to 35.9208 weeks.
    assert hadlock_2sd_range(300.0, 300.0) == pytest.approx((30.5992, 35.9208), abs=1e-9)


# Mean HC (cm) by menstrual age, "from Hadlock (1984)", as tabulated at
# http://www.medicalalgorithms.com/head-circumference (rows 16, 20, 24, 30, 36, 40 weeks).
HADLOCK_TABLE = [(16.0, 12.4), (20.0, 17.7), (24.0, 22.4), (30.0, 28.4), (36.0, 32.8), (40.0, 34.6)]


@pytest.mark.parametrize(("weeks", "hc_cm"), HADLOCK_TABLE)
def test_hadlock_formula_dates_the_published_mean_heads_within_2sd(weeks, hc_cm) -> None:
    # The formula predicts GA from HC; the table gives the mean HC at a GA. The two
    # regressions differ (most in the third trimester), but the formula's GA for the
    # table's mean head must lie inside the population's +/-2 SD of the true age.
    low, high = hadlock_2sd_range(hc_cm * 10.0, hc_cm * 10.0)
    assert low <= weeks <= high
    assert abs(hadlock_1984(hc_cm * 10.0).weeks - weeks) < 0.08 * weeks


# The INTERGROWTH-21st fetal growth standard for HC, its published table of z-scores
# (grow_fetal-zs_hc_table, mm; Papageorghiou et al., Lancet 2014): weeks, -2 SD, mean, +2 SD.
INTERGROWTH_HC_TABLE = [
    (14.0, 86.7, 97.9, 109.0),
    (20.0, 157.6, 172.5, 187.4),
    (30.0, 259.9, 278.4, 296.9),
    (40.0, 308.1, 333.9, 359.8),
]


@pytest.mark.parametrize(("weeks", "minus2", "mean", "plus2"), INTERGROWTH_HC_TABLE)
def test_intergrowth_hc_standard_gives_the_published_table(weeks, minus2, mean, plus2) -> None:
    m, sd = intergrowth_hc_standard(weeks)
    # The table is rounded to 0.1 mm.
    assert m == pytest.approx(mean, abs=0.06)
    assert m - 2 * sd == pytest.approx(minus2, abs=0.06)
    assert m + 2 * sd == pytest.approx(plus2, abs=0.06)


@pytest.mark.parametrize(("weeks", "minus2", "mean", "plus2"), INTERGROWTH_HC_TABLE[1:3])
def test_intergrowth_2sd_range_reads_the_standard_backwards(weeks, minus2, mean, plus2) -> None:
    # A head at the table's +2 SD of a week is the youngest it can be within 2 SD: the
    # range starts there; one at -2 SD is the oldest: the range ends there. 0.05 mm
    # of rounding is under 0.01 weeks at 12-9 mm a week.
    assert intergrowth_2sd_range(plus2, plus2)[0] == pytest.approx(weeks, abs=0.01)
    assert intergrowth_2sd_range(minus2, minus2)[1] == pytest.approx(weeks, abs=0.01)
    # The mean head's range holds its week, and so does the dating formula's GA for it.
    low, high = intergrowth_2sd_range(mean, mean)
    assert low < weeks < high
    assert low < intergrowth_21st(mean).weeks < high
    # An HC interval widens the range at both ends.
    wide = intergrowth_2sd_range(mean - 5.0, mean + 5.0)
    assert wide[0] < low and wide[1] > high


def test_intergrowth_2sd_range_stays_inside_the_standard() -> None:
    # 100 mm is below the +2 SD of 14 weeks (109.0 mm), so heads younger than 14 weeks
    # hold it within 2 SD: the range would start before the standard does.
    assert intergrowth_2sd_range(100.0, 100.0) is None
    # 350 mm is above the -2 SD of 40 weeks (308.1 mm): the range would end after it.
    assert intergrowth_2sd_range(350.0, 350.0) is None
    with pytest.raises(ValueError, match="reversed"):
        intergrowth_2sd_range(210.0, 200.0)
