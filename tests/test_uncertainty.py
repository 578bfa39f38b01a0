import math

import numpy as np
import pytest

from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import hadlock_1984, intergrowth_hc_standard
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.uncertainty import (
    FLAG_INPUTS,
    FlagModel,
    IntervalModel,
    fit_flag,
    fit_interval,
    flag_model,
    interval_features,
    interval_model,
    profile_features,
    ridge_logistic,
)

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
    assert model.scale(200.0, {"rel_rms": 0.01, "border": 1.0}) > 2 * model.scale(
        200.0, {"rel_rms": 0.01, "border": 0.0}
    )


def graded_rows(rng: np.random.Generator, n: int, hole: float, sd: float) -> list[dict]:
    """Rows with every qc-flag input; relative HC errors N(0, sd), heads of 60-330 mm."""
    rows = []
    for h in rng.uniform(60.0, 330.0, n):
        e = rng.normal(0.0, sd)
        rows.append({
            "plain_hc_mm": h, "hc_ref_mm": h - h * e, "rel_rms": 0.01, "border": 0.0,
            "confidence": 0.99, "blur": 0.05, "hole": hole, "spill": 0.02, "unsupported": 0.0,
        })  # fmt: skip
    return rows


def coverage(model: IntervalModel, rows: list[dict]) -> float:
    hits = [
        lo <= r["hc_ref_mm"] <= hi for r in rows for lo, hi in [model.interval(r["plain_hc_mm"], r)]
    ]
    return float(np.mean(hits))


def test_learned_scale_covers_easy_and_hard_images_alike() -> None:
    # Two kinds of image that differ only in how much of the head the map leaves out
    # (hole): 1 % errors for the clear ones, 4 % for the others. The residual scale
    # cannot tell them apart, so it over-covers the clear ones and under-covers the
    # others; the learned scale reads hole and covers each near 90 %.
    rng = np.random.default_rng(3)
    cal = graded_rows(rng, 3000, 0.05, 0.01) + graded_rows(rng, 3000, 0.30, 0.04)
    easy, hard = graded_rows(rng, 5000, 0.05, 0.01), graded_rows(rng, 5000, 0.30, 0.04)
    residual, learned = fit_interval(cal, 0.9), fit_interval(cal, 0.9, scale="learned")
    assert residual.learned is None and learned.learned is not None
    assert coverage(residual, easy) > 0.99 and coverage(residual, hard) < 0.8
    assert 0.87 <= coverage(learned, easy) <= 0.93
    assert 0.87 <= coverage(learned, hard) <= 0.93
    # 1.645 SD of each kind's error: about 3.3 % and 13.2 % of HC for the full width.
    r_easy, r_hard = easy[0], hard[0]
    assert learned.scale(200.0, r_easy) == pytest.approx(1.645 * 0.01, rel=0.15)
    assert learned.scale(200.0, r_hard) == pytest.approx(1.645 * 0.04, rel=0.15)


def test_learned_scale_round_trip_and_refusals(tmp_path) -> None:
    from conftest import TINY

    rng = np.random.default_rng(4)
    model = fit_interval(graded_rows(rng, 300, 0.1, 0.02), 0.9, scale="learned")
    assert IntervalModel.from_dict(model.to_dict()) == model
    # Through a checkpoint saved and loaded with weights_only=True.
    meta = {"calibration": {"hc_interval": [model.to_dict()]}}
    Checkpoint.from_model(ResUNet(TINY), meta).save(tmp_path / "c.pt")
    assert interval_model(Checkpoint.load(tmp_path / "c.pt").meta, 0.9) == model
    stale = model.to_dict()
    stale["learned"] = {**stale["learned"], "inputs": ["log_hc"]}
    with pytest.raises(ValueError, match="recalibrate the weights"):
        IntervalModel.from_dict(stale)
    # A checkpoint calibrated before the learned scale existed loads with the residual one.
    old = {k: v for k, v in fit_interval(graded_rows(rng, 300, 0.1, 0.02), 0.9).to_dict().items()
           if k != "learned"}  # fmt: skip
    assert IntervalModel.from_dict(old).learned is None
    with pytest.raises(ValueError, match="scale must be one of"):
        fit_interval(graded_rows(rng, 300, 0.1, 0.02), 0.9, scale="flip")  # type: ignore[arg-type]


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
    # Semi-axes 80 and 60 px at 0.4 mm: HC about 177 mm, GA about 20 weeks.
    r = m.measure(synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0], 0.4)
    assert r.hc_low_mm == pytest.approx(r.hc_mm * 0.96)
    assert r.hc_high_mm == pytest.approx(r.hc_mm * 1.04)
    row = r.to_row()
    assert row["hc_low_mm"] < row["hc_mm"] < row["hc_high_mm"]
    # GA at the interval's ends: Hadlock's formula rises with HC.
    assert row["ga_weeks_hadlock_low"] < row["ga_weeks_hadlock"] < row["ga_weeks_hadlock_high"]
    assert row["ga_weeks_hadlock_low"] == hadlock_1984(row["hc_low_mm"]).weeks
    # With the population's +/-8 % (2 SD) at each end.
    assert row["ga_weeks_hadlock_2sd_low"] == pytest.approx(0.92 * row["ga_weeks_hadlock_low"])
    assert row["ga_weeks_hadlock_2sd_high"] == pytest.approx(1.08 * row["ga_weeks_hadlock_high"])
    # And INTERGROWTH-21st's growth standard read backwards: the interval's lower end is
    # its +2 SD at the range's start, the upper end its -2 SD at the range's end.
    mean, sd = intergrowth_hc_standard(row["ga_weeks_intergrowth_2sd_low"])
    assert mean + 2 * sd == pytest.approx(row["hc_low_mm"], abs=1e-6)
    mean, sd = intergrowth_hc_standard(row["ga_weeks_intergrowth_2sd_high"])
    assert mean - 2 * sd == pytest.approx(row["hc_high_mm"], abs=1e-6)
    assert row["ga_weeks_intergrowth_2sd_low"] < row["ga_weeks_intergrowth_low"]
    assert row["ga_weeks_intergrowth_high"] < row["ga_weeks_intergrowth_2sd_high"]
    # At 0.1 mm the same head is 44 mm, about 11 weeks: outside Hadlock's 14-42 weeks,
    # where no population spread was reported, so none is given.
    small = m.measure(synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0], 0.1).to_row()
    assert small["ga_hadlock_in_range"] is False and small["ga_weeks_hadlock_2sd_low"] is None
    assert small["ga_weeks_intergrowth_2sd_low"] is None


def test_interval_features() -> None:
    f = interval_features(Ellipse(0, 0, 100, 50, 0), 1.0, 0.98, True, 300.0)
    assert f == {"rel_rms": 0.02, "border": 1.0, "confidence": 0.98, "band": "third"}
    assert math.isclose(
        interval_features(Ellipse(0, 0, 10, 20, 0), 0.0, 0.9, False)["rel_rms"], 1e-6
    )


def radial_map(e: Ellipse, shape, profile) -> np.ndarray:
    """A map whose value depends only on the normalised ellipse radius r of each pixel."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    u = (ca * (xx - e.cx) + sa * (yy - e.cy)) / e.a
    v = (-sa * (xx - e.cx) + ca * (yy - e.cy)) / e.b
    return profile(np.hypot(u, v)).astype(np.float32)


def test_profile_features_of_a_crisp_head() -> None:
    e = Ellipse(150, 100, 90, 60, 0.4)
    crisp = radial_map(e, (200, 300), lambda r: (r <= 1.0).astype(float))
    f = profile_features(crisp, (1.0, 1.0), e, 0.6)
    # The map drops from 1 to 0 within one radial step (0.01) of the ellipse: no blur
    # beyond the pixel grid, no hole, no spill, every ray crosses at the ellipse.
    assert f["blur"] <= 0.02
    assert f["hole"] == 0.0 and f["spill"] == 0.0 and f["unsupported"] == 0.0


def test_profile_features_of_a_ramp_written_out() -> None:
    # p(r) = 0.5 - (r - 1) / 0.4, clipped to [0, 1]: p = 0.9 at r = 0.84 and p = 0.2
    # at r = 1.12, so the transition is 0.28 of the radius wide. Inside, 1 - p is 0 up
    # to r = 0.8 and 0.025 * k at r = 0.8 + 0.01 k (k = 1..9): over the 29 radii
    # 0.61..0.89 the mean is 0.025 * 45 / 29 = 0.0388. Outside, p at 1.11..1.29 is
    # 0.225, 0.2, ..., 0 (then 0): sum 0.025 * (9 + 8 + ... + 1) = 1.125 over 19 radii.
    # The map is given at half resolution (scale 0.5), as the network's is.
    e = Ellipse(300, 200, 180, 120, 0.0)
    half = Ellipse(149.75, 99.75, 90, 60, 0.0)
    ramp = radial_map(half, (200, 300), lambda r: np.clip(0.5 - (r - 1.0) / 0.4, 0.0, 1.0))
    f = profile_features(ramp, (0.5, 0.5), e, 0.6)
    assert f["blur"] == pytest.approx(0.28, abs=0.015)
    assert f["hole"] == pytest.approx(0.025 * 45 / 29, abs=0.005)
    assert f["spill"] == pytest.approx(1.125 / 19, abs=0.005)
    assert f["unsupported"] == 0.0


def test_profile_features_see_a_missing_wall() -> None:
    # The map shows only the half of the ellipse with x > cx: the rays on the other
    # side find no boundary, half of them.
    e = Ellipse(150, 100, 90, 60, 0.0)
    half = radial_map(e, (200, 300), lambda r: (r <= 1.0).astype(float))
    half[:, :150] = 0.0
    assert profile_features(half, (1.0, 1.0), e, 0.6)["unsupported"] == pytest.approx(0.5, abs=0.02)


def flag_rows(n: int = 200) -> list[dict]:
    """Rows that differ only in blur; the 20 blurriest have a 8 mm error, the rest 1 mm."""
    rows = []
    for i in range(n):
        large = i >= n - 20
        rows.append(
            {
                "plain_hc_mm": 200.0,
                "hc_ref_mm": 200.0 - (8.0 if large else 1.0),
                "rel_rms": 0.02,
                "border": 0.0,
                "confidence": 0.97,
                "blur": 0.05 + 0.001 * i,
                "hole": 0.01,
                "spill": 0.02,
                "unsupported": 0.0,
            }
        )
    return rows


def test_flag_fit_flags_the_share_with_the_large_errors() -> None:
    rows = flag_rows()
    flag = fit_flag(rows, share=0.1)
    flagged = [flag.flags(r["plain_hc_mm"], r) for r in rows]
    # Blur alone separates them, so the flagged 10 % are exactly the 20 large errors.
    assert flagged == [False] * 180 + [True] * 20
    assert flag.n_calibration == 200 and flag.share == 0.1
    # Every row has HC 200 mm: any other HC is outside what the flag has seen.
    assert flag.hc_range_mm == (200.0, 200.0)
    clean = rows[0]
    assert not flag.flags(200.0, clean) and flag.flags(199.0, clean) and flag.flags(201.0, clean)
    # Blurrier means likelier to be wrong.
    assert flag.weights[FLAG_INPUTS.index("log_blur")] > 0


def test_flag_is_fitted_to_the_errors_of_the_hc_it_is_told() -> None:
    # The reported HC (after a prior, say) is 8 mm off for the 20 sharpest rows instead
    # of the 20 blurriest: fitted to its errors, the flag picks those and leans the other
    # way on blur; its inputs are still read with plain_hc_mm.
    rows = flag_rows()
    for i, r in enumerate(rows):
        r["reported_hc_mm"] = r["hc_ref_mm"] + (8.0 if i < 20 else 1.0)
    flag = fit_flag(rows, share=0.1, error_hc_key="reported_hc_mm")
    assert [flag.flags(r["plain_hc_mm"], r) for r in rows] == [True] * 20 + [False] * 180
    assert flag.weights[FLAG_INPUTS.index("log_blur")] < 0
    # A row without that HC is left out of the calibration.
    del rows[0]["reported_hc_mm"]
    assert fit_flag(rows, error_hc_key="reported_hc_mm").n_calibration == 199


def test_ridge_logistic_recovers_the_log_odds_of_a_binary_input() -> None:
    # x = -1: 1 in 4 positive; x = +1: 3 in 4. The maximum-likelihood fit (no penalty to
    # speak of) has logit(3/4) = ln 3 at x = 1 and logit(1/4) = -ln 3 at x = -1:
    # bias 0 and weight ln 3 = 1.0986.
    x = np.array([[-1.0]] * 4 + [[1.0]] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], float)
    bias, weight = ridge_logistic(x, y, l2=1e-9)
    assert bias == pytest.approx(0.0, abs=1e-6)
    assert weight == pytest.approx(math.log(3.0), abs=1e-6)
    # A penalty shrinks the weight towards 0.
    assert 0.0 < ridge_logistic(x, y, l2=4.0)[1] < weight


def test_flag_fit_needs_large_errors_and_a_share() -> None:
    rows = [{**r, "hc_ref_mm": r["plain_hc_mm"]} for r in flag_rows()]
    with pytest.raises(ValueError, match="large error"):
        fit_flag(rows)
    with pytest.raises(ValueError, match="share"):
        fit_flag(flag_rows(), share=1.5)


def test_flag_round_trips_through_the_checkpoint(tmp_path) -> None:
    flag = fit_flag(flag_rows())
    ck = Checkpoint.from_model(ResUNet(), {"calibration": {"qc_flag": flag.to_dict()}})
    ck.save(tmp_path / "w.pt")
    back = flag_model(Checkpoint.load(tmp_path / "w.pt").meta)
    assert back == flag
    stale = {**flag.to_dict(), "inputs": ["log_hc"]}
    with pytest.raises(ValueError, match="recalibrate"):
        FlagModel.from_dict(stale)


def flag_meta(threshold: float) -> dict:
    """A flag whose score is 0 for every image, flagged when 0 > ``threshold``."""
    k = len(FLAG_INPUTS)
    flag = FlagModel((0.0,) * k, (1.0,) * k, (0.0,) * k, 0.0, threshold, 0.1, 5.0, 1, (10, 400))
    return {"calibration": {"qc_flag": flag.to_dict()}}


def test_the_measurer_applies_the_stored_flag() -> None:
    from conftest import FINE_CONFIG, RingBackend, synthetic_scan

    image = synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0]
    qc = {}
    for threshold in (-1.0, 1.0):
        ck = Checkpoint.from_model(ResUNet(FINE_CONFIG), flag_meta(threshold))
        m = HeadMeasurer(ck, backend="torch", tta=False, reject_non_heads=False)
        m.backend = RingBackend()
        qc[threshold] = m.measure(image, 0.1).qc
    assert qc == {-1.0: "uncertain_hc", 1.0: "ok"}
    # No pixel size, no HC: nothing to flag.
    assert "uncertain_hc" not in m.measure(image, None).qc
