"""benchmarks/axis_errors.py: the HC error split between the ellipse's two axes."""

import math

import pytest

from conftest import load_benchmark
from fetalhead.geometry.ellipse import Ellipse


def test_a_circle_one_pixel_too_big_splits_its_hc_error_between_the_axes() -> None:
    module = load_benchmark("axis_errors")
    # Radius 41 against 40 px at 0.5 mm: both semi-axes 0.5 mm long, HC 2*pi*0.5 mm long.
    row = module.axis_row(Ellipse(100, 100, 41, 41, 0.0), Ellipse(100, 100, 40, 40, 0.0), 0.5)
    assert row["major_mm"] == pytest.approx(0.5)
    assert row["abs_minor_mm"] == pytest.approx(0.5)
    assert row["adf_mm"] == pytest.approx(math.pi, rel=1e-6)
    # One axis alone: about half of it (a 41 x 40 px ellipse's perimeter is 2*pi*40.5
    # px to within 0.01 px).
    assert row["adf_major_only_mm"] == pytest.approx(math.pi / 2, abs=0.01)
    assert row["adf_minor_only_mm"] == pytest.approx(math.pi / 2, abs=0.01)


def test_axes_are_matched_by_length_not_by_name() -> None:
    module = load_benchmark("axis_errors")
    # The same ellipse turned by 90 degrees, its semi-axes given the other way round.
    ref = Ellipse(100, 100, 60, 45, 0.0)
    row = module.axis_row(Ellipse(100, 100, 45, 62, math.pi / 2), ref, 1.0)
    assert row["major_mm"] == pytest.approx(2.0)
    assert row["abs_minor_mm"] == pytest.approx(0.0)
    assert row["adf_minor_only_mm"] == pytest.approx(0.0)
    assert row["adf_major_only_mm"] == pytest.approx(row["adf_mm"])
