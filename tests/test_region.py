import cv2
import numpy as np
import pytest

from fetalhead.geometry.ellipse import (
    Ellipse,
    find_head_contour,
    ramanujan_perimeter,
    render_ellipse_coverage,
)
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.geometry.region import head_part
from fetalhead.postprocess import postprocess

SHAPE = (540, 800)
#: Semi-axes 110 and 85 px: perimeter 615.1 px (Ramanujan; written out, not recomputed).
HEAD = Ellipse(400.0, 250.0, 110.0, 85.0, 0.0)
HEAD_PERIMETER_PX = 615.1


def head_map(extra: tuple[slice, slice] | None = None) -> np.ndarray:
    """A soft head map, optionally joined to a rectangle of tissue."""
    prob = render_ellipse_coverage(HEAD, SHAPE).astype(np.float32)
    if extra is not None:
        prob[extra] = 1.0
    return cv2.GaussianBlur(prob, (0, 0), 1.5)


def test_written_out_perimeter_matches_ramanujan() -> None:
    assert ramanujan_perimeter(110.0, 85.0) == pytest.approx(HEAD_PERIMETER_PX, abs=0.05)


@pytest.mark.parametrize(("a", "b"), [(110.0, 85.0), (120.0, 80.0), (90.0, 90.0)])
def test_a_lone_head_ellipse_is_kept_whole(a: float, b: float) -> None:
    prob = render_ellipse_coverage(Ellipse(400.0, 250.0, a, b, 0.3), SHAPE)
    pts, _ = find_head_contour(prob, 0.5)
    # Axis ratio up to 1.5: tips rounder than a disk of half the inscribed radius.
    assert head_part(pts, 0.5) is None


@pytest.mark.parametrize(
    "tissue",
    [
        # A wall 40 px thick that the bottom of the head (y = 335) rests on.
        (slice(333, 373), slice(60, 740)),
        # A lobe of tissue beside the head, joined to it by a neck 30 px wide.
        (slice(235, 265), slice(500, 560)),
    ],
    ids=["wall", "lobe"],
)
def test_tissue_merged_with_the_head_is_cut_off(tissue: tuple[slice, slice]) -> None:
    prob = head_map(tissue)
    if tissue[1].start == 500:
        # The lobe itself: a disk of radius 60 px beyond the neck.
        cv2.circle(prob, (620, 250), 60, 1.0, -1)
        prob = cv2.GaussianBlur(prob, (0, 0), 1.5)
    lb = Letterbox(*SHAPE, *SHAPE, True)
    merged, _, _, _ = postprocess(prob, lb, "full", level=0.5)
    opened, contour, _, _ = postprocess(prob, lb, "full", level=0.5, open_ratio=0.5)
    assert merged is not None and opened is not None and contour is not None
    # The whole outline runs round head and wall: far too long.
    assert merged.perimeter > 1.3 * HEAD_PERIMETER_PX
    assert opened.perimeter == pytest.approx(HEAD_PERIMETER_PX, rel=0.01)
    assert (opened.cx, opened.cy) == pytest.approx((400.0, 250.0), abs=1.5)
    # No point of the tissue's outline is used.
    assert contour[:, 1].max() < 250.0 + 85.0 + 2.5
    assert contour[:, 0].max() < 400.0 + 110.0 + 2.5


def test_the_opening_leaves_a_lone_head_as_measured_without_it() -> None:
    prob = head_map()
    lb = Letterbox(*SHAPE, *SHAPE, True)
    plain, _, _, _ = postprocess(prob, lb, "full", level=0.5)
    opened, _, _, _ = postprocess(prob, lb, "full", level=0.5, open_ratio=0.5)
    assert plain is not None and opened is not None
    assert opened == plain


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2])
def test_ratio_outside_zero_one_is_refused(ratio: float) -> None:
    pts, _ = find_head_contour(render_ellipse_coverage(HEAD, SHAPE), 0.5)
    with pytest.raises(ValueError, match="opening ratio"):
        head_part(pts, ratio)
