import math

import numpy as np
import pytest

from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import hadlock_1984
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.uncertainty import IntervalModel, fit_interval, interval_features, interval_model

#: A predicted HC in each band: 80 mm (13.4 weeks by Hadlock: first trimester), 200 mm
#: (22.2 weeks: second), 300 mm (33.3 weeks: third).
BAND_HC = (80.0, 200.0, 300.0)


def rows_with_errors(rel_errors, rel_rms=0.01, border=0.0, bands=BAND_HC):
    """The same relative errors at a predicted HC in every band."""
    return [
        {"plain_hc_mm": h, "hc_ref_mm": h - h * e, "rel_rms": rel_rms, "border": border}
        for h in bands
        for e in rel_errors
    ]


def test_conformal_quantile_worked_example() -> None:
    # 20 images per band, relative errors 0.5 %, 1.0 %, ..., 10 %: scores 0.005 .. 0.100.
    # Level 0.9: the ceil(21 * 0.9) = 19th smallest score, 0.095, in each band. All images
    # equally hard, so no scaling: an HC of 200 mm gets 200 -/+ 19 mm.
    model = fit_interval(rows_with_errors([0.005 * i for i in range(1, 21)]), 0.9)
    assert model.q == pytest.approx({"first": 0.095, "second": 0.095, "third": 0.095})
    assert (model.b_fit, model.b_border) == (0.0, 0.0)
    low, high = model.interval(200.0, {"rel_rms": 0.01, "border": 0.0})
    assert (low, high) == pytest.approx((181.0, 219.0))


def test_intervals_cover_exchangeable_new_data() -> None:
    rng = np.random.default_rng(0)
    # Large samples, so that sampling error (about 0.5 %) stays well inside the window.
    model = fit_interval(rows_with_errors(rng.normal(0, 0.02, 4000)), 0.9)
    new = rows_with_errors(rng.normal(0, 0.02, 10000), bands=(200.0,))
    covered = [
        model.interval(r["plain_hc_mm"], r)[0]
        <= r["hc_ref_mm"]
        <= model.interval(r["plain_hc_mm"], r)[1]
        for r in new
    ]
    # 1.645 SD of a 2 % error; coverage within sampling error of 90 %.
    assert model.q["second"] == pytest.approx(1.645 * 0.02, rel=0.1)
    assert 0.88 <= np.mean(covered) <= 0.92


def test_clipped_heads_get_wider_intervals() -> None:
    rng = np.random.default_rng(1)
    easy = rows_with_errors(rng.normal(0, 0.01, 400))
    clipped = rows_with_errors(rng.normal(0, 0.05, 100), border=1.0)
    model = fit_interval(easy + clipped, 0.9)
    assert model.b_border > 0
    assert model.scale({"rel_rms": 0.01, "border": 1.0, "band": "second"}) > 2 * model.scale(
        {"rel_rms": 0.01, "border": 0.0, "band": "second"}
    )


def test_each_band_gets_its_own_quantile() -> None:
    # Small heads with 10 % errors, the others with 1 %: one pooled quantile would
    # under-cover the small heads; per band, each gets its own.
    rows = rows_with_errors([0.001 * i for i in range(1, 41)], bands=(200.0, 300.0))
    rows += rows_with_errors([0.005 * i for i in range(1, 41)], bands=(80.0,))
    model = fit_interval(rows, 0.9)
    # ceil(41 * 0.9) = 37th of 40: 3.7 % and 18.5 %.
    assert model.q["second"] == pytest.approx(0.037) and model.q["first"] == pytest.approx(0.185)


def test_too_little_calibration_data_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20 calibration images per HC band"):
        fit_interval(rows_with_errors([0.01] * 5))
    with pytest.raises(ValueError, match="level"):
        fit_interval(rows_with_errors([0.01] * 30), 1.5)


def test_calibration_round_trip_through_the_checkpoint(tmp_path) -> None:
    from conftest import TINY

    models = [
        IntervalModel(
            lv, dict.fromkeys(("first", "second", "third"), 0.03 * lv), 0.01, 0.5, 1.0, 900
        )
        for lv in (0.8, 0.9, 0.95)
    ]
    ck = Checkpoint.from_model(
        ResUNet(TINY), {"calibration": {"hc_interval": [m.to_dict() for m in models]}}
    )
    ck.save(tmp_path / "c.pt")
    loaded = Checkpoint.load(tmp_path / "c.pt")
    assert interval_model(loaded.meta, 0.9) == models[1]
    assert HeadMeasurer(loaded, backend="torch", interval_level=0.95).interval == models[2]
    with pytest.raises(ValueError, match="choose one of"):
        interval_model(loaded.meta, 0.5)
    assert interval_model({}, 0.9) is None


def test_measurement_carries_its_interval(tmp_path) -> None:
    from conftest import FINE_CONFIG, RingBackend, synthetic_scan

    model = IntervalModel(
        0.9, dict.fromkeys(("first", "second", "third"), 0.04), 0.01, 0.0, 0.0, 900
    )
    ck = Checkpoint.from_model(
        ResUNet(FINE_CONFIG), {"calibration": {"hc_interval": [model.to_dict()]}}
    )
    m = HeadMeasurer(ck, backend="torch", tta=False, reject_non_heads=False)
    m.backend = RingBackend()
    r = m.measure(synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0], 0.1)
    assert r.hc_low_mm == pytest.approx(r.hc_mm * 0.96)
    assert r.hc_high_mm == pytest.approx(r.hc_mm * 1.04)
    row = r.to_row()
    assert row["hc_low_mm"] < row["hc_mm"] < row["hc_high_mm"]
    # GA at the interval's ends: Hadlock's formula rises with HC.
    assert row["ga_weeks_hadlock_low"] < row["ga_weeks_hadlock"] < row["ga_weeks_hadlock_high"]
    assert row["ga_weeks_hadlock_low"] == hadlock_1984(row["hc_low_mm"]).weeks


def test_interval_features() -> None:
    f = interval_features(Ellipse(0, 0, 100, 50, 0), 1.0, 0.98, True, 300.0)
    assert f == {"rel_rms": 0.02, "border": 1.0, "confidence": 0.98, "band": "third"}
    assert math.isclose(
        interval_features(Ellipse(0, 0, 10, 20, 0), 0.0, 0.9, False)["rel_rms"], 1e-6
    )


def test_wide_intervals_are_flagged_for_review() -> None:
    from conftest import FINE_CONFIG, RingBackend, synthetic_scan

    model = IntervalModel(
        0.9, dict.fromkeys(("first", "second", "third"), 0.04), 0.01, 1.0, 2.0, 900
    )
    meta = {
        "calibration": {
            "hc_interval": [model.to_dict()],
            "qc_flag": {"level": 0.9, "max_halfwidth_mm": 2.5},
        }
    }
    # HC of the ring about 44 mm (semi-axes 80, 60 px at 0.1 mm).
    # A clean ring: u = 1 (fit residual below r0, not clipped): 4 % of 44 mm = 1.8 mm < 2.5.
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(FINE_CONFIG), meta), backend="torch",
                     tta=False, reject_non_heads=False)  # fmt: skip
    m.backend = RingBackend()
    assert m.measure(synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0], 0.1).qc == "ok"
    # Clipped by the field of view: u = 1 + 2 = 3 or more, 12 % of HC > 2.5 mm: flagged.
    clipped = m.measure(synthetic_scan(Ellipse(20, 135, 80, 60, 0.3))[0], 0.1)
    assert "touches_border" in clipped.qc and "uncertain_hc" in clipped.qc
