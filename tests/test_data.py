from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MINI, make_mask_dataset
from fetalhead.data import (
    CachedCases,
    detect_layout,
    fill_outline,
    find_cases,
    kfold_by_prefix,
    label_ellipse,
    label_mask,
    split_by_prefix,
)
from fetalhead.geometry.ellipse import Ellipse, ellipse_points, find_head_contour, fit_ellipse
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.image import InputError
from fetalhead.readers import read_gray


def test_fill_outline_makes_solid_mask() -> None:
    ring = np.zeros((50, 50), np.uint8)
    cv2.circle(ring, (25, 25), 15, 255, 1)
    filled = fill_outline(ring)
    assert filled[25, 25] == 1 and filled[0, 0] == 0
    assert filled.sum() == pytest.approx(np.pi * 15**2, rel=0.05)


def test_hc18_layout_and_reference_hc() -> None:
    assert detect_layout(MINI) == "hc18"
    cases = find_cases(MINI)
    assert [c.image.name for c in cases] == ["052_HC.png", "433_HC.png", "788_2HC.png"]
    for c in cases:
        # The ellipse fitted to the outline reproduces the published HC.
        assert label_ellipse(c).perimeter * c.pixel_size_mm == pytest.approx(c.hc_mm, abs=0.05)
        m = label_mask(c)
        assert m.max() == 1 and m.sum() > 1000


def test_mask_layout(tmp_path: Path) -> None:
    root = make_mask_dataset(tmp_path / "d", 4)
    assert detect_layout(root) == "mask"
    cases = find_cases(root)
    assert len(cases) == 4 and all(c.pixel_size_mm == 0.2 for c in cases)
    assert cases[0].layout == "mask"


def test_no_labels_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no labelled images"):
        detect_layout(tmp_path)


def test_rgb_input_is_converted_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 1] = 200
    cv2.imwrite(str(tmp_path / "x.png"), rgb)
    g = read_gray(tmp_path / "x.png")
    assert g.shape == (40, 60) and g.dtype == np.uint8
    assert int(g[0, 0]) == round(0.587 * 200)


def test_split_by_prefix_never_leaks(tmp_path: Path) -> None:
    root = make_mask_dataset(tmp_path / "d", 40)
    cases = find_cases(root)
    train, val = split_by_prefix(cases, 0.25, seed=3)
    assert len(train) + len(val) == len(cases) and val
    assert {c.prefix for c in train}.isdisjoint({c.prefix for c in val})
    # Sibling frames (NNN_HC and NNN_2HC) stay together.
    for c in val:
        assert all(o.prefix != c.prefix for o in train)
    assert split_by_prefix(cases, 0.25, seed=3) == (train, val)
    assert split_by_prefix(cases, 0.25, seed=4) != (train, val)


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("shape", [(540, 800), (600, 700), (300, 1000)])
def test_letterbox_maps_ellipses_consistently(shape, keep) -> None:
    lb = Letterbox(shape[0], shape[1], 192, 288, keep)
    e = Ellipse(shape[1] * 0.45, shape[0] * 0.55, shape[0] * 0.3, shape[0] * 0.2, 0.8)
    net = lb.ellipse_to_net(e)
    back = fit_ellipse(lb.to_original(ellipse_points(net, 400))).ellipse
    assert back.perimeter == pytest.approx(e.perimeter, rel=1e-4)
    assert (back.cx, back.cy) == pytest.approx((e.cx, e.cy), abs=1e-3)
    if keep:
        sx, sy = lb.scale
        assert sx == pytest.approx(sy, rel=0.01)


def test_cached_soft_targets_are_unbiased() -> None:
    cases = find_cases(MINI)
    cache = CachedCases(cases, (192, 288))
    for case, img, target in zip(cases, cache.images, cache.targets, strict=True):
        assert img.shape == target.shape == (192, 288)
        shape = read_gray(case.image).shape
        lb = Letterbox(shape[0], shape[1], 192, 288)
        # The target spans the whole network canvas, padding included: no pad to add.
        pts, _ = find_head_contour(target)
        e = fit_ellipse(lb.to_original(pts)).ellipse
        ref = label_ellipse(case)
        assert e.perimeter * case.pixel_size_mm == pytest.approx(case.hc_mm, abs=0.1)
        # Centre and angle too: the HC18 submission reports them.
        assert (e.cx, e.cy) == pytest.approx((ref.cx, ref.cy), abs=0.5)

        # (a, b, angle) and (b, a, angle + pi/2) are one ellipse: compare the major axes.
        def major_angle(x: Ellipse) -> float:
            return x.angle if x.a >= x.b else x.angle + np.pi / 2

        d = abs(major_angle(e) - major_angle(ref)) % np.pi
        assert min(d, np.pi - d) < 0.02
        assert (e.major, e.minor) == pytest.approx((ref.major, ref.minor), abs=0.5)


def _cases_with_prefixes(counts: dict[str, int]) -> list:
    from fetalhead.data import Case

    cases = []
    for prefix, n in counts.items():
        for k in range(n):
            name = f"{prefix}_HC.png" if k == 0 else f"{prefix}_{k + 1}HC.png"
            cases.append(Case(Path(name), Path(name), "mask"))
    return cases


def test_kfold_by_prefix_covers_every_case_once_and_keeps_scans_together() -> None:
    # 30 scans: ten with three frames, twenty with one -> 50 images.
    counts = {f"{i:03d}": 3 if i < 10 else 1 for i in range(30)}
    cases = _cases_with_prefixes(counts)
    seen: list[str] = []
    sizes = []
    for k in range(5):
        train, val = kfold_by_prefix(cases, 5, k, seed=7)
        assert len(train) + len(val) == 50
        assert {c.prefix for c in train}.isdisjoint({c.prefix for c in val})
        sizes.append(len(val))
        seen += [c.image.name for c in val]
    # Dealing each scan to the smallest fold keeps the folds within one scan (3 images).
    assert max(sizes) - min(sizes) <= 3
    assert sorted(seen) == sorted(c.image.name for c in cases)
    # The same seed gives the same folds; another seed others.
    assert kfold_by_prefix(cases, 5, 2, seed=7)[1] == kfold_by_prefix(cases, 5, 2, seed=7)[1]
    assert kfold_by_prefix(cases, 5, 2, seed=8)[1] != kfold_by_prefix(cases, 5, 2, seed=7)[1]


@pytest.mark.parametrize(("folds", "fold"), [(1, 0), (5, 5), (5, -1)])
def test_kfold_by_prefix_rejects_bad_arguments(folds: int, fold: int) -> None:
    with pytest.raises(ValueError, match="fold"):
        kfold_by_prefix(_cases_with_prefixes({"001": 1, "002": 1}), folds, fold)
