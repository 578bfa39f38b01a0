import math

import pytest

from fetalhead.gestation import hadlock_1984, intergrowth_21st


def test_intergrowth_worked_example() -> None:
    # HC = 250 mm gives 189.8 days (Papageorghiou et al. 2016 formula).
    ga = intergrowth_21st(250.0)
    assert ga.days == pytest.approx(189.8, abs=0.05)
    assert ga.in_range


def test_hadlock_formula() -> None:
    # HC 25 cm: 8.96 + 0.540*25 + 0.0003*25**3 = 27.1475 weeks.
    ga = hadlock_1984(250.0)
    assert ga.weeks == pytest.approx(8.96 + 0.54 * 25 + 0.0003 * 25**3)
    assert ga.in_range and ga.formula == "hadlock_1984"


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
