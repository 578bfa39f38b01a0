"""benchmarks/failure_gallery.py: the boundary level follows the HC band, as predict does."""

import math

import numpy as np
import pytest

from conftest import load_benchmark
from fetalhead.geometry.letterbox import Letterbox


def soft_disk(r_in: float, r_out: float) -> np.ndarray:
    """1 inside ``r_in``, 0 outside ``r_out``, linear between.

    The boundary at level L lies at radius ``r_out - L (r_out - r_in)``.
    """
    yy, xx = np.mgrid[:192, :288].astype(np.float32)
    r = np.hypot(xx - 143.5, yy - 95.5)
    return np.clip((r_out - r) / (r_out - r_in), 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize(
    ("px_mm", "radius_px"),
    [
        # HC 2 pi 79.5 px x 0.3 mm = 149.9 mm at P = 0.55: a second-trimester head, kept.
        (0.3, 85.0 - 0.55 * 10.0),
        # 299.7 mm at P = 0.55 is a third-trimester head: measured again at P = 0.65.
        (0.6, 85.0 - 0.65 * 10.0),
    ],
)
def test_heads_are_measured_at_the_level_of_their_band(px_mm: float, radius_px: float) -> None:
    module = load_benchmark("failure_gallery")
    prob = soft_disk(75.0, 85.0)
    levels = {"first": 0.55, "second": 0.55, "third": 0.65}
    e, contour = module.banded_fit(prob, Letterbox(192, 288, 192, 288), px_mm, levels)
    assert e is not None and contour is not None
    assert e.perimeter * px_mm == pytest.approx(2 * math.pi * radius_px * px_mm, abs=0.5)


def test_an_empty_map_has_no_fit() -> None:
    module = load_benchmark("failure_gallery")
    levels = {"first": 0.55, "second": 0.55, "third": 0.65}
    empty = np.zeros((192, 288), np.float32)
    assert module.banded_fit(empty, Letterbox(192, 288, 192, 288), 0.3, levels) == (None, None)
