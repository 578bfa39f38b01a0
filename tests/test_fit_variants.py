"""benchmarks/fit_variants.py: the fit's knobs set for one measurement, then put back."""

import math

import cv2
import numpy as np
import pytest

import fetalhead.postprocess as pp
from conftest import load_benchmark
from fetalhead import predict
from fetalhead.geometry.letterbox import Letterbox

LEVELS = {"first": 0.55, "second": 0.55, "third": 0.6}


def test_a_drawn_ellipse_is_measured_with_any_knobs_and_the_defaults_come_back() -> None:
    module = load_benchmark("fit_variants")
    prob = cv2.ellipse(np.zeros((192, 288), np.float32), (144, 96), (60, 40), 0, 0, 360, 1.0, -1)
    prob = cv2.GaussianBlur(prob, (0, 0), 1.5)
    lb = Letterbox(192, 288, 192, 288)
    fit_before, post_before = pp.fit_ellipse, predict.postprocess
    for power, cut in [(2.0, 4.685), (1.0, 4.685), (2.0, 2.5)]:
        e = module.measure(prob, lb, LEVELS, 0.5, power, cut)
        # A clean ellipse: every knob finds its 60 x 40 px semi-axes (the half level of a
        # blurred edge lies on the drawn edge, 0.55 about 0.1 px inside it).
        assert (max(e.a, e.b), min(e.a, e.b)) == pytest.approx((60.0, 40.0), abs=0.6)
    assert (pp.fit_ellipse, predict.postprocess) == (fit_before, post_before)
    default = predict.fit_by_band(prob, lb, "full", LEVELS, 0.55, 0.5)[0]
    same = module.measure(prob, lb, LEVELS, 0.5, 2.0, 4.685)
    assert math.isclose(same.perimeter, default.perimeter, rel_tol=1e-12)
