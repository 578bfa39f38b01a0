"""benchmarks/skull_ring.py: the skull ridge along a fitted ellipse, read in the image."""

import math

import cv2
import numpy as np
import pytest

from conftest import load_benchmark
from fetalhead.geometry.ellipse import Ellipse

HEAD = Ellipse(400.0, 270.0, 120.0, 90.0, 0.0)


def image(arc_deg: float = 360.0) -> np.ndarray:
    """Grey 40 everywhere, with a 6 px ridge of 200 along ``arc_deg`` degrees of HEAD."""
    img = np.full((540, 800), 40, np.uint8)
    if arc_deg:
        cv2.ellipse(img, (400, 270), (120, 90), 0.0, 0.0, arc_deg, 200, 6)
    return img


def test_no_ridge_gives_zero_contrast() -> None:
    f = load_benchmark("skull_ring").ring_features(image(0.0), HEAD)
    # Uniform image: every log ratio is ln(41 / 41).
    assert f == {"ring_contrast": 0.0, "ring_weak": 0.0, "ring_inside": 0.0}


def test_a_full_ridge_is_bright_on_every_ray() -> None:
    f = load_benchmark("skull_ring").ring_features(image(), HEAD)
    # The ridge (about 7 px wide, +160) blurred with sigma 2.7 px peaks at
    # 40 + erf(3.5 / (2.7 * sqrt 2)) * 160 = 40 + 0.805 * 160 = 169: ln(170 / 41) = 1.42.
    # Inside and outside are both the background.
    assert f["ring_contrast"] == pytest.approx(math.log(170 / 41), abs=0.05)
    assert f["ring_weak"] > 1.0
    assert f["ring_inside"] == pytest.approx(0.0, abs=1e-6)


def test_a_missing_quarter_shows_in_the_weakest_quarter_only() -> None:
    f = load_benchmark("skull_ring").ring_features(image(250.0), HEAD)
    assert f["ring_contrast"] > 1.0
    # 110 of 360 degrees without ridge: the lower quartile of the rays sees background.
    assert f["ring_weak"] == pytest.approx(0.0, abs=0.05)
