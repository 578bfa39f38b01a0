"""benchmarks/aspect_prior.py: a prior on the head's shape, chosen fold by fold."""

from pathlib import Path

import pytest

from conftest import load_benchmark
from fetalhead.geometry.ellipse import ramanujan_perimeter

BANDS = ("first", "second", "third")


def load():
    return load_benchmark("aspect_prior")


def row(fold: int, prefix: str, band: str, major: float, minor: float, ref_major: float) -> dict:
    """A held-out head whose reference has semi-axes ``ref_major`` and 0.8 * ``ref_major``."""
    ref_minor = 0.8 * ref_major
    return {
        "fold": fold, "prefix": prefix, "band": band, "trimester": band,
        "major_mm": major, "minor_mm": minor, "ref_major_mm": ref_major,
        "ref_minor_mm": ref_minor, "hc_ref_mm": ramanujan_perimeter(ref_major, ref_minor),
    }  # fmt: skip


def noisy_major(fold: int) -> list[dict]:
    """Heads of axis ratio 0.8 whose minor axis is right and major axis 3 mm off."""
    return [
        row(fold, f"{fold}{band[0]}{i}", band, 50.0 + (3.0 if i % 2 else -3.0), 40.0, 50.0)
        for band in BANDS
        for i in range(4)
    ]


def test_a_right_minor_axis_and_a_fixed_shape_give_the_prior_full_weight() -> None:
    module = load()
    chosen = module.choose(noisy_major(0))
    for band in BANDS:
        ratio, w = chosen[band]
        assert ratio == pytest.approx(0.8)
        assert w == 1.0  # minor / 0.8 = 50 mm, the reference, exactly


def test_a_right_major_axis_keeps_the_fit() -> None:
    module = load()
    # The major axis right (50 mm), the minor 2 mm off either way: the prior can only hurt.
    rows = [row(0, f"p{b}{i}", b, 50.0, 40.0 + (2.0 if i % 2 else -2.0), 50.0)
            for b in BANDS for i in range(4)]  # fmt: skip
    assert {b: w for b, (_, w) in module.choose(rows).items()} == dict.fromkeys(BANDS, 0.0)


def test_each_fold_is_judged_with_the_prior_chosen_on_the_others() -> None:
    module = load()
    # Fold 0: the major axis is off, so the prior would help it; fold 1: the fit is
    # exact. Fold 0's weight is chosen on fold 1 (0: no prior), fold 1's on fold 0 (1).
    exact = [row(1, f"1{b}{i}", b, 50.0, 40.0, 50.0) for b in BANDS for i in range(4)]
    rows, picks = module.cross_fold(noisy_major(0) + exact)
    assert all(picks[0][b][1] == 0.0 for b in BANDS)
    assert all(picks[1][b][1] == 1.0 for b in BANDS)
    for r in rows:  # neither fold gains: fold 0 keeps its fit, fold 1's prior is exact
        assert r["hc_prior_mm"] == pytest.approx(r["hc_plain_mm"], abs=1e-9)
    stats = module.summary(rows)
    assert stats["all"]["n"] == 24
    assert stats["all"]["adf_change"][0] == pytest.approx(0.0, abs=1e-9)


def test_overlap_of_an_exact_fit_and_of_its_prior() -> None:
    module = load()
    from fetalhead.data import Case
    from fetalhead.geometry.ellipse import Ellipse

    # The fit is the reference (a 100 x 80 px head at 0.2 mm): DSC 1 and HD 0. The prior
    # (ratio 0.8, weight 1) predicts the same major axis, 80 / 0.8 = 100 px: no change.
    e = Ellipse(200, 150, 100, 80, 0.2)
    case = Case(Path("a.png"), Path("a_Annotation.png"), "hc18", 0.2, e.perimeter * 0.2)
    rows = [{"filename": "a.png", "prior_ratio": 0.8, "prior_weight": 1.0}]
    (r,) = module.overlap(rows, {"a.png": (e, e, case, (300, 400))})
    assert r["dsc_plain"] == pytest.approx(1.0) and r["dsc_prior"] == pytest.approx(1.0)
    assert r["hd_plain_mm"] == pytest.approx(0.0, abs=1e-6)
    assert r["hd_prior_mm"] == pytest.approx(0.0, abs=1e-6)


def test_two_runs_are_compared_image_by_image() -> None:
    module = load()

    def rows(errors: list[float]) -> list[dict]:
        return [
            {"filename": f"{i:03d}_HC.png", "prefix": f"{i:03d}", "trimester": "second",
             "hc_ref_mm": 170.0, "hc_prior_mm": 170.0 + e, "dsc_prior": 0.97,
             "hd_prior_mm": 1.0 + abs(e) / 10}
            for i, e in enumerate(errors)
        ]  # fmt: skip

    base = rows([2.0, -4.0, 1.0, 0.0])
    # This run: 1 mm nearer on the first two images, 1 mm farther on the third; the
    # fourth image only the base measured, so it is left out of both.
    change = module.paired_change(rows([1.0, -3.0, 2.0]), base)["all"]
    assert change["n"] == 3
    assert change["adf_base"][0] == pytest.approx(7.0 / 3)
    assert change["adf"][0] == pytest.approx(2.0)
    assert change["adf_change"][0] == pytest.approx(-1.0 / 3)
    assert change["dsc_change"][0] == pytest.approx(0.0)
    assert change["hd_change"][0] == pytest.approx(-0.1 / 3)
