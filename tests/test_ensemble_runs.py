"""benchmarks/ensemble_runs.py: one network pass against two, paired on the same images."""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import load_benchmark
from fetalhead.data import Case


def disk(radius: int) -> np.ndarray:
    return cv2.circle(np.zeros((192, 288), np.float32), (144, 96), radius, 1.0, -1)


def test_an_ensemble_of_two_hard_maps_measures_where_both_agree() -> None:
    module = load_benchmark("ensemble_runs")
    # Network-sized image (no letterbox scaling), 0.5 mm pixels.
    case = Case(
        Path("001_HC.png"), Path("001_HC_Annotation.png"), "hc18", 0.5, 2 * math.pi * 40 * 0.5
    )
    runs = {
        "a": {"001_HC.png": (disk(40), disk(40))},
        "b": {"001_HC.png": (disk(50), disk(60))},
    }
    df = module.variant_errors(runs, case, (192, 288), level=0.6)
    # A drawn disk of radius r has its P = 0.6 outline about 0.4 px outside r: HC within 2 mm.
    assert df["a"] == pytest.approx(0.0, abs=2.0)
    assert df["b"] == pytest.approx(2 * math.pi * 10 * 0.5, abs=2.0)
    # Mean of the flips: 1 inside radius 50, 0.5 out to 60; the level 0.6 keeps radius 50
    # (its outline 0.8 px out where p falls from 1 to 0.5, not 0.4 px: +1.3 mm of HC).
    assert df["b + flip"] == pytest.approx(df["b"] + 2 * math.pi * 0.4 * 0.5, abs=0.5)
    # Mean of the runs: 1 inside 40, 0.5 out to 50 -> run a's head.
    assert df["a & b"] == pytest.approx(df["a"] + 2 * math.pi * 0.4 * 0.5, abs=0.5)


def test_two_pass_variants_are_paired_with_their_members() -> None:
    module = load_benchmark("ensemble_runs")
    rows = [
        {"prefix": f"{i:03d}", "trimester": "second",
         "df": {"a": 2.0, "b": -4.0, "a + flip": 3.0, "b + flip": -4.0, "a & b": 1.0}}
        for i in range(6)
    ]  # fmt: skip
    # Where one variant finds no head, the image leaves every figure, and is counted.
    rows.append(
        {
            "prefix": "999",
            "trimester": "first",
            "df": {"a": math.nan, "b": 40.0, "a + flip": 50.0, "b + flip": 1.0, "a & b": 1.0},
        }
    )
    summary = module.summarise(rows, ["a", "b"])
    assert summary["n"] == 6
    report = summary["variants"]
    assert report["a"]["no_head_found"] == 1 and report["b"]["no_head_found"] == 0
    assert report["a"]["passes"] == 1 and report["a"]["adf_mm"][0] == pytest.approx(2.0)
    both = report["a & b"]
    assert both["passes"] == 2 and both["better_member"] == "a"
    assert both["minus_members_mean_mm"][0] == pytest.approx(1.0 - 3.0)
    assert both["minus_better_member_mm"][0] == pytest.approx(1.0 - 2.0)
    assert report["a + flip"]["minus_better_member_mm"][0] == pytest.approx(1.0)
    made_of = module.variants_of(["a", "b"])
    assert made_of == {"a": ("a",), "a + flip": ("a",), "b": ("b",), "b + flip": ("b",),
                       "a & b": ("a", "b")}  # fmt: skip
