"""The head crop box and the crop samples that teach the second pass; boxes clear of the head."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import synthetic_scan
from fetalhead.data import CachedCases, find_cases
from fetalhead.geometry.crop import CropBox, head_crop_box, headless_box
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.training.samples import HeadDataset


def test_circle_box_is_widened_to_the_network_aspect() -> None:
    # Radius 50, margin 1.5: a 150 x 150 box, widened to 225 x 150 (192:288 = 2:3).
    box = head_crop_box(Ellipse(200, 150, 50, 50, 0.0), (540, 800), (192, 288), 1.5)
    assert box == CropBox(88, 75, 313, 226)
    assert box.shape == (151, 225)


def test_upright_ellipse_box_follows_its_rotated_extent() -> None:
    # a = 100 along the y axis (angle 90 degrees), b = 40: extent 80 x 200 before the
    # margin; 1.2 * 200 = 240 high, so 360 wide at 2:3.
    box = head_crop_box(Ellipse(400, 270, 100, 40, math.pi / 2), (540, 800), (192, 288), 1.2)
    assert box == CropBox(220, 150, 581, 391)


def test_box_is_cut_to_the_image_and_knows_its_inner_edges() -> None:
    box = head_crop_box(Ellipse(30, 500, 60, 60, 0.0), (540, 800), (192, 288), 1.4)
    assert (box.x0, box.y1) == (0, 540)
    assert box.is_inner_edge((540, 800)) == (False, True, True, False)
    whole = head_crop_box(Ellipse(400, 270, 300, 250, 0.0), (540, 800), (192, 288), 1.4)
    assert whole == CropBox(0, 0, 800, 540)
    assert whole.is_inner_edge((540, 800)) == (False, False, False, False)


def test_shift_moves_the_box_by_a_fraction_of_its_size() -> None:
    base = head_crop_box(Ellipse(400, 270, 50, 50, 0.0), (540, 800), (192, 288), 1.5)
    moved = head_crop_box(Ellipse(400, 270, 50, 50, 0.0), (540, 800), (192, 288), 1.5, (0.1, -0.1))
    # Box 225 x 150: 10 % is 22.5 px right and 15 px up (rounded to whole pixels).
    assert moved.x0 - base.x0 in (22, 23) and base.y0 - moved.y0 == 15


def test_crop_samples_hold_any_head_at_one_scale(tmp_path) -> None:
    """Margin m: a circle's radius is 96 / m network pixels at 192x288, whatever its size."""
    rows = ["filename,pixel size(mm)"]
    for i, r in enumerate((40, 90)):
        img, mask = synthetic_scan(Ellipse(300, 250, r, r, 0.0), (540, 800), seed=i)
        cv2.imwrite(str(tmp_path / f"{i:03d}_HC.png"), img)
        cv2.imwrite(str(tmp_path / f"{i:03d}_HC_Mask.png"), mask * 255)
        rows.append(f"{i:03d}_HC.png,0.1")
    (tmp_path / "pixel_size.csv").write_text("\n".join(rows) + "\n")
    cache = CachedCases(find_cases(tmp_path), (192, 288), keep_originals=True)
    ds = HeadDataset(cache, None, crop_fraction=1.0, crop_margin=(1.5, 1.5), crop_shift=0.0)
    for i in range(2):
        x, _, y = ds[i]  # (image, mm per network pixel, target)
        assert x.shape == y.shape == (1, 192, 288)
        # Radius 64 network pixels: area pi * 64^2 = 12868 (box edges rounded to pixels).
        assert float(y.sum()) == pytest.approx(12868, rel=0.02)
        # The full-image sample keeps the head at the letterbox scale (192 / 540).
        r = (40, 90)[i] * 192 / 540
        assert float(cache.targets[i].sum()) == pytest.approx(math.pi * r * r, rel=0.03)
        # The crop is centred on the head: its centroid is the network input's centre.
        yy, xx = np.nonzero(y[0].numpy() > 0.5)
        assert (xx.mean(), yy.mean()) == pytest.approx((143.5, 95.5), abs=1.0)


def test_crop_samples_need_the_originals(tmp_path) -> None:
    img, mask = synthetic_scan(Ellipse(200, 135, 60, 50, 0.0))
    cv2.imwrite(str(tmp_path / "000_HC.png"), img)
    cv2.imwrite(str(tmp_path / "000_HC_Mask.png"), mask * 255)
    (tmp_path / "pixel_size.csv").write_text("filename,pixel size(mm)\n000_HC.png,0.1\n")
    cache = CachedCases(find_cases(tmp_path), (64, 96))
    with pytest.raises(ValueError, match="keep_originals"):
        HeadDataset(cache, None, crop_fraction=0.5)


def test_a_box_clear_of_the_head() -> None:
    # The head's ellipse grown 1.2 times spans x 20-380 and y 150-390 of an 800 x 540
    # scan. Widths 560-440 overlap it; 400 (x 380-779, y 0-269, above its widest row)
    # is the first that fits: the first such box scanning rows, then columns.
    img = np.full((540, 800), 100, np.uint8)
    head = Ellipse(200, 270, 150, 100, 0.0)
    assert headless_box(img, head) == CropBox(380, 0, 780, 270)
    img[:, 600:] = 0  # dark from x = 600: a 400-wide box there is 55 % inside, too little
    assert headless_box(img, head) == CropBox(380, 0, 740, 243)  # 220 / 360 = 61 % inside
    assert headless_box(img, Ellipse(400, 270, 300, 200, 0.0)) is None  # the head fills it


def test_negative_samples_show_the_scan_clear_of_the_head(tmp_path) -> None:
    # Head of radius 100 at x = 200: grown 1.2 times it ends at x = 320, so the widest
    # box clear of it is 440 x 297 at x = 330 (560 to 480 wide overlap it). A head of
    # radius 250 in the middle leaves no box: that case keeps its own image and target.
    # Every pixel is in the field of view (> 8), so the first box found wins.
    for i, e in enumerate((Ellipse(200, 270, 100, 100, 0.0), Ellipse(400, 270, 250, 250, 0.0))):
        img, mask = synthetic_scan(e, (540, 800), seed=i)
        img = np.maximum(img, 9)
        cv2.imwrite(str(tmp_path / f"{i:03d}_HC.png"), img)
        cv2.imwrite(str(tmp_path / f"{i:03d}_HC_Mask.png"), mask * 255)
    cache = CachedCases(find_cases(tmp_path), (192, 288), negatives=True)
    assert cache.negatives[1] is None
    ds = HeadDataset(cache, None, negative_fraction=1.0)
    x, mm, y = ds[0]
    img = cv2.imread(str(tmp_path / "000_HC.png"), cv2.IMREAD_GRAYSCALE)
    expected = Letterbox(297, 440, 192, 288).apply(img[0:297, 330:770])
    assert np.array_equal((x[0].numpy() * 255).round().astype(np.uint8), expected)
    assert float(y.sum()) == 0.0 and math.isnan(float(mm))
    x, _, y = ds[1]
    assert np.array_equal(y[0].numpy(), cache.targets[1]) and float(y.sum()) > 0
    with pytest.raises(ValueError, match="negatives"):
        HeadDataset(CachedCases(find_cases(tmp_path), (192, 288)), None, negative_fraction=0.2)
