import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ellipe

from fetalhead.geometry.ellipse import (
    Ellipse,
    boundary_sharpness,
    ellipse_points,
    find_head_contour,
    fit_ellipse,
    ramanujan_perimeter,
    render_ellipse_coverage,
    render_ellipse_mask,
)


def exact_perimeter(a: float, b: float) -> float:
    a, b = max(a, b), min(a, b)
    return 4 * a * ellipe(1 - (b / a) ** 2)


@pytest.mark.parametrize(("a", "b"), [(100, 100), (100, 70), (100, 40), (300, 250), (5, 1)])
def test_ramanujan_matches_exact_perimeter(a: float, b: float) -> None:
    assert ramanujan_perimeter(a, b) == pytest.approx(exact_perimeter(a, b), rel=1e-6)


def measured_hc(e: Ellipse, shape: tuple[int, int], soft: bool) -> float:
    img = render_ellipse_coverage(e, shape) if soft else render_ellipse_mask(e, shape).astype(float)
    pts, _ = find_head_contour(img)
    return fit_ellipse(pts).ellipse.perimeter


@pytest.mark.parametrize("a", [25.0, 80.0, 200.0])
@pytest.mark.parametrize("ratio", [1.0, 0.8, 0.6])
@pytest.mark.parametrize("angle", [0.0, 0.4, 1.3, 2.7])
def test_hc_from_synthetic_masks_within_half_percent(a: float, ratio: float, angle: float) -> None:
    e = Ellipse(270.3, 230.7, a, a * ratio, angle)
    for soft in (True, False):
        assert measured_hc(e, (480, 560), soft) == pytest.approx(e.perimeter, rel=0.005)


def test_fit_recovers_parameters_and_convention() -> None:
    e = Ellipse(100.0, 80.0, 60.0, 30.0, 0.5)
    fit = fit_ellipse(ellipse_points(e, 400)).ellipse
    assert (fit.cx, fit.cy) == pytest.approx((100.0, 80.0), abs=1e-3)
    # The semi-axis 'a' lies along 'angle'; the same ellipse may be reported as
    # (a, b, t) or (b, a, t + pi/2).
    if fit.a > fit.b:
        assert (fit.a, fit.b, fit.angle) == pytest.approx((60.0, 30.0, 0.5), abs=1e-3)
    else:
        assert (fit.a, fit.b) == pytest.approx((30.0, 60.0), abs=1e-3)
        assert fit.angle == pytest.approx(0.5 + math.pi / 2, abs=1e-3)
    assert 0 <= fit.angle < math.pi


def test_angle_measured_from_x_towards_y_down() -> None:
    # A long ellipse from top-left to bottom-right has angle pi/4 in image coordinates.
    e = Ellipse(100, 100, 60, 10, math.pi / 4)
    mask = render_ellipse_mask(e, (200, 200))
    assert mask[140, 140] == 1 and mask[140, 60] == 0
    pts, _ = find_head_contour(mask.astype(float))
    fit = fit_ellipse(pts).ellipse
    major_angle = fit.angle if fit.a > fit.b else (fit.angle + math.pi / 2) % math.pi
    assert major_angle == pytest.approx(math.pi / 4, abs=0.01)


def test_hc18_parameters_in_mm() -> None:
    p = Ellipse(10, 20, 30, 15, 4.0).to_hc18_mm(0.5)
    assert p == pytest.approx(
        {
            "center_x_mm": 5,
            "center_y_mm": 10,
            "semi_axes_a_mm": 15,
            "semi_axes_b_mm": 7.5,
            "angle_rad": 4.0 - math.pi,
        }
    )


def test_robust_fit_ignores_stray_points() -> None:
    e = Ellipse(200, 150, 90, 60, 0.3)
    pts = ellipse_points(e, 300)
    stray = np.array([[20.0, 20.0], [380.0, 30.0], [30.0, 290.0], [200.0, 5.0]] * 3)
    fit = fit_ellipse(np.vstack([pts, stray]))
    assert fit.ellipse.perimeter == pytest.approx(e.perimeter, rel=1e-3)
    assert fit.n_inliers == 300
    assert fit_ellipse(np.vstack([pts, stray]), robust=False).ellipse.perimeter != pytest.approx(
        e.perimeter, rel=1e-3
    )


def test_contour_ignores_holes_and_small_blobs() -> None:
    m = render_ellipse_mask(Ellipse(100, 100, 60, 40, 0), (200, 300)).astype(float)
    m[95:105, 95:105] = 0  # hole
    m[10:20, 250:260] = 1  # second blob
    pts, area = find_head_contour(m)
    assert area == pytest.approx(math.pi * 60 * 40, rel=0.02)
    assert pts[:, 0].max() < 200


def test_contour_of_border_touching_region_is_closed() -> None:
    m = render_ellipse_mask(Ellipse(10, 50, 40, 30, 0), (100, 100)).astype(float)
    pts, _ = find_head_contour(m)
    assert np.allclose(pts[0], pts[-1])


def test_empty_map_has_no_contour() -> None:
    assert find_head_contour(np.zeros((50, 50))) is None


@settings(max_examples=25, deadline=None)
@given(
    a=st.floats(20, 80),
    ratio=st.floats(0.5, 1.0),
    angle=st.floats(0, math.pi),
    dx=st.floats(-40, 40),
    dy=st.floats(-40, 40),
    rot=st.floats(0, math.pi),
)
def test_hc_invariant_to_translation_and_rotation(a, ratio, angle, dx, dy, rot) -> None:
    e = Ellipse(150, 140, a, a * ratio, angle)
    moved = Ellipse(150 + dx, 140 + dy, a, a * ratio, angle + rot)
    hc1 = measured_hc(e, (300, 300), soft=True)
    hc2 = measured_hc(moved, (300, 300), soft=True)
    assert hc2 == pytest.approx(hc1, rel=0.005)


@settings(max_examples=25, deadline=None)
@given(px=st.floats(0.01, 1.0), k=st.floats(0.1, 10.0))
def test_hc_scales_linearly_with_pixel_size(px: float, k: float) -> None:
    e = Ellipse(100, 90, 70, 50, 0.7)
    hc_mm = e.perimeter * px
    assert e.perimeter * (px * k) == pytest.approx(k * hc_mm, rel=1e-12)
    assert e.to_hc18_mm(px * k)["semi_axes_a_mm"] == pytest.approx(k * e.a * px)


def test_nonuniform_scaling_of_rotated_ellipse() -> None:
    e = Ellipse(100, 80, 60, 30, 0.6)
    s = e.scaled(0.5, 0.25)
    pts = ellipse_points(e, 500) * np.array([0.5, 0.25])
    assert fit_ellipse(pts).ellipse.perimeter == pytest.approx(s.perimeter, rel=1e-4)


def test_boundary_sharpness_is_the_gradient_magnitude() -> None:
    yy, xx = np.mgrid[0:40, 0:60].astype(np.float32)
    ramp = 0.02 * xx + 0.01 * yy  # |grad| = sqrt(0.02**2 + 0.01**2)
    pts = np.array([[10.3, 7.7], [30.0, 20.5], [0.0, 0.0], [59.0, 39.0]])
    g = boundary_sharpness(ramp, pts)
    np.testing.assert_allclose(g[:2], math.hypot(0.02, 0.01), rtol=1e-5)
    # At the map's edge the one-sided difference halves, but stays finite.
    assert np.all(np.isfinite(g)) and np.all(g > 0)


def test_uniformly_weighted_fit_equals_the_unweighted_fit() -> None:
    rng = np.random.default_rng(3)
    pts = ellipse_points(Ellipse(210.5, 140.2, 95.0, 61.0, 0.7), 300) + rng.normal(0, 0.4, (300, 2))
    plain = fit_ellipse(pts, robust=False).ellipse
    weighted = fit_ellipse(pts, weights=np.full(300, 2.5), robust=False).ellipse
    for attr in ("cx", "cy", "a", "b"):
        assert getattr(weighted, attr) == pytest.approx(getattr(plain, attr), rel=1e-5)
    assert weighted.perimeter == pytest.approx(plain.perimeter, rel=1e-6)


def test_weights_discount_uncertain_points() -> None:
    """Points pushed outwards on one side count little when their weight is small."""
    e = Ellipse(200, 150, 90, 60, 0.0)
    pts = ellipse_points(e, 360)
    side = pts[:, 0] > e.cx + 0.7 * e.a
    pts[side, 0] += 4.0  # a biased wall
    w = np.where(side, 0.01, 1.0)
    assert fit_ellipse(pts, weights=w).ellipse.perimeter == pytest.approx(e.perimeter, rel=2e-3)
    assert fit_ellipse(pts).ellipse.perimeter > e.perimeter * 1.005
    # Zero weight leaves points out entirely.
    w0 = np.where(side, 0.0, 1.0)
    fit = fit_ellipse(pts, weights=w0, robust=False)
    assert fit.ellipse.perimeter == pytest.approx(e.perimeter, rel=1e-6)
    assert fit.n_inliers == int((~side).sum())


@pytest.mark.parametrize(
    "weights", [np.ones(10), -np.ones(20), np.r_[np.ones(19), np.nan], np.r_[np.ones(4), [0] * 16]]
)
def test_bad_weights_are_refused(weights) -> None:
    pts = ellipse_points(Ellipse(50, 50, 30, 20, 0.0), 20)
    with pytest.raises(ValueError, match="weights|at least 5"):
        fit_ellipse(pts, weights=weights)


@pytest.mark.parametrize("where", ["middle", "corner", "edge", "two_regions"])
def test_contour_search_on_the_head_box_matches_the_whole_map(where: str) -> None:
    """find_head_contour scans only the region's bounding box; the result must not change."""
    from skimage import measure

    shape = (120, 170)
    centres = {"middle": [(85, 60)], "corner": [(5, 4)], "edge": [(169, 60)]}
    centres["two_regions"] = [(40, 40), (130, 80)]
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    prob = np.zeros(shape, np.float32)
    for i, (cx, cy) in enumerate(centres[where]):
        r = np.hypot((xx - cx) / (30 - 5 * i), (yy - cy) / (20 - 3 * i))
        prob = np.maximum(prob, np.clip(1.5 - r, 0, 1))
    padded = np.pad(prob, 1)
    whole = max(
        (c[:, ::-1] - 1.0 for c in measure.find_contours(padded, 0.5, fully_connected="high")),
        key=lambda c: abs(np.sum(c[:, 0] * np.roll(c[:, 1], -1) - c[:, 1] * np.roll(c[:, 0], -1))),
    )
    pts, _ = find_head_contour(prob)
    np.testing.assert_allclose(pts, whole, atol=1e-9)
    assert find_head_contour(np.zeros(shape, np.float32)) is None


def test_blend_long_axis_moves_only_the_major_axis() -> None:
    from fetalhead.geometry.ellipse import blend_long_axis

    # The major axis is b here (100 px): 0.5 * 100 + 0.5 * 50 / 0.8 = 81.25 px.
    e = Ellipse(10, 20, 50, 100, 0.4)
    assert blend_long_axis(e, 0.8, 0.5) == Ellipse(10, 20, 50, 81.25, 0.4)
    assert blend_long_axis(e, 0.8, 0.0) == e
    # Weight 1: the shape of the prior exactly, 50 / 0.8 = 62.5 px.
    assert blend_long_axis(Ellipse(0, 0, 100, 50, 0.0), 0.8, 1.0).a == pytest.approx(62.5)
    # A ratio of 1 and weight 1 makes a circle of the minor axis.
    assert blend_long_axis(e, 1.0, 1.0).b == pytest.approx(50)
    with pytest.raises(ValueError, match="ratio"):
        blend_long_axis(e, 0.0, 0.5)
    with pytest.raises(ValueError, match="weight"):
        blend_long_axis(e, 0.8, 1.5)
