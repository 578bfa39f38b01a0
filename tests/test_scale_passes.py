"""benchmarks/scale_passes.py: the held-out heads measured at other input sizes."""

import argparse
import math

import pytest

from conftest import load_benchmark


def load():
    return load_benchmark("scale_passes")


def test_sizes_are_parsed_and_must_fit_four_poolings() -> None:
    module = load()
    assert module.parse_size("176x272") == (176, 272)
    with pytest.raises(argparse.ArgumentTypeError, match="multiples of 16"):
        module.parse_size("180x270")


def test_the_report_pairs_each_pass_with_the_own_size() -> None:
    module = load()
    # Four scans, each a second-trimester head of 200 mm: the own size measures 202 mm
    # (2 mm off), the other size 199 mm (1 mm off), their average 200.5 mm.
    # A fifth scan found no head at the other size: it is left out of every row.
    rows = [
        {"prefix": p, "trimester": "second", "hc_ref_mm": 200.0, "hc_192x288_mm": 202.0,
         "hc_176x272_mm": 199.0, "hc_avg_176x272_mm": 200.5}
        for p in ("001", "002", "003", "004")
    ] + [{"prefix": "005", "trimester": "first", "hc_ref_mm": 70.0, "hc_192x288_mm": 90.0,
          "hc_176x272_mm": math.nan, "hc_avg_176x272_mm": 71.0}]  # fmt: skip
    table = module.report(rows, [(176, 272)], (192, 288)).splitlines()
    assert table[0] == "4 of 5 images with a head found in every pass."
    assert table[4] == (
        "| 192x288 | 0 | 2.00 (2.00 to 2.00) | +0.00 (+0.00 to +0.00) | - | 2.00 | - |"
    )
    assert table[5] == (
        "| 176x272 | 1 | 1.00 (1.00 to 1.00) | -1.00 (-1.00 to -1.00) | - | 1.00 | - |"
    )
    assert table[6] == (
        "| avg_176x272 | 0 | 0.50 (0.50 to 0.50) | -1.50 (-1.50 to -1.50) | - | 0.50 | - |"
    )
