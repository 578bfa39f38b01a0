"""Labelled data sets: HC18 and simple-mask layouts, prefix-grouped splits, cached targets."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from fetalhead.geometry.crop import headless_box
from fetalhead.geometry.ellipse import (
    Ellipse,
    find_head_contour,
    fit_ellipse,
    render_ellipse_coverage,
)
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.image import InputError
from fetalhead.readers import read_gray
from fetalhead.readers.tables import find_pixel_size_table, read_pixel_size_csv

logger = logging.getLogger(__name__)

Layout = Literal["hc18", "mask"]
_PREFIX = re.compile(r"^(\d{3})_")


@dataclass(frozen=True)
class Case:
    """One labelled image.

    Attributes:
        image: Path of the ultrasound image.
        label: Path of the annotation outline (``hc18``) or filled mask (``mask``).
        layout: Which layout the label follows.
        pixel_size_mm: Pixel size, if a CSV lists it.
        hc_mm: Reference head circumference, if a CSV lists it.

    """

    image: Path
    label: Path
    layout: Layout
    pixel_size_mm: float | None = None
    hc_mm: float | None = None

    @property
    def prefix(self) -> str:
        """Scan identifier shared by sibling frames (the 3-digit prefix)."""
        return scan_prefix(self.image.name)


def scan_prefix(filename: str) -> str:
    """The 3-digit scan prefix of an HC18-style name, else the stem."""
    m = _PREFIX.match(Path(filename).name)
    return m.group(1) if m else Path(filename).stem


def detect_layout(root: Path) -> Layout:
    """Detect the labelled layout of a folder.

    Raises:
        InputError: If the folder holds no labelled images.

    """
    if any(root.glob("*_Annotation.png")):
        return "hc18"
    if any(root.glob("*_Mask.png")):
        return "mask"
    raise InputError(
        f"{root}: no labelled images found (expected NNN_HC.png with "
        "NNN_HC_Annotation.png or NNN_HC_Mask.png)"
    )


def find_cases(root: str | Path, pixel_csv: str | Path | None = None) -> list[Case]:
    """List the labelled cases in a folder, detecting its layout.

    The pixel-size CSV is taken from ``pixel_csv`` or found beside the folder
    (HC18's ``training_set_pixel_size_and_HC.csv``) or inside it; only a table
    with a file-name and a pixel-size column (and optionally HC) qualifies, and
    two qualifying tables are an error (:func:`find_pixel_size_table`).

    Raises:
        InputError: If the folder holds no labelled images, or its pixel-size
            table is ambiguous.

    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    layout = detect_layout(root)
    suffix = "_Annotation.png" if layout == "hc18" else "_Mask.png"
    csv_path = Path(pixel_csv) if pixel_csv else find_pixel_size_table(root)
    table = read_pixel_size_csv(csv_path) if csv_path else None
    cases = []
    for label in sorted(root.glob(f"*{suffix}")):
        image = label.with_name(label.name[: -len(suffix)] + ".png")
        if not image.exists():
            logger.warning("%s: label without image %s, skipped", label, image.name)
            continue
        px = table.pixel_size_mm.get(image.name) if table else None
        hc = table.hc_mm.get(image.name) if table else None
        cases.append(Case(image, label, layout, px, hc))
    return cases


def fill_outline(outline: NDArray) -> NDArray[np.uint8]:
    """Fill a 1-px closed outline into a solid mask (outline included)."""
    ring = np.asarray(outline) > 127 if np.asarray(outline).max() > 1 else np.asarray(outline) > 0
    return ndimage.binary_fill_holes(ring).astype(np.uint8)


def label_mask(case: Case) -> NDArray[np.uint8]:
    """The filled 0/1 head mask of a case at its original resolution."""
    lab = read_gray(case.label)
    return fill_outline(lab) if case.layout == "hc18" else (lab > 127).astype(np.uint8)


def label_ellipse(case: Case) -> Ellipse:
    """The reference ellipse of a case in original pixel coordinates.

    For HC18, the ellipse is fitted to the annotation outline's pixel centres,
    which reproduces the challenge's reference HC; for filled masks it is fitted
    to the sub-pixel boundary of the mask.
    """
    lab = read_gray(case.label)
    if case.layout == "hc18":
        ys, xs = np.nonzero(lab > 127)
        pts = np.stack([xs, ys], axis=1).astype(np.float64)
    else:
        found = find_head_contour((lab > 127).astype(np.float32))
        if found is None:
            raise InputError(f"{case.label}: mask is empty")
        pts = found[0]
    if len(pts) < 5:
        raise InputError(f"{case.label}: label has too few pixels to define an ellipse")
    return fit_ellipse(pts, robust=False).ellipse


def split_by_prefix(
    cases: list[Case], val_fraction: float = 0.15, seed: int = 42
) -> tuple[list[Case], list[Case]]:
    """Split cases so that all frames of one scan fall on the same side.

    Args:
        cases: Cases to split.
        val_fraction: Fraction of scan prefixes in validation.
        seed: Seed of the shuffle; the split depends only on it and the prefixes.

    Returns:
        ``(train, val)``.

    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    prefixes = sorted({c.prefix for c in cases})
    random.Random(seed).shuffle(prefixes)
    n_val = round(len(prefixes) * val_fraction)
    if val_fraction > 0 and len(prefixes) > 1:
        n_val = min(max(n_val, 1), len(prefixes) - 1)
    val_set = set(prefixes[:n_val])
    train = [c for c in cases if c.prefix not in val_set]
    val = [c for c in cases if c.prefix in val_set]
    return train, val


def kfold_by_prefix(
    cases: list[Case], folds: int, fold: int, seed: int = 42
) -> tuple[list[Case], list[Case]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation, grouped by scan prefix.

    The prefixes are shuffled with ``seed`` and dealt to the folds in turn, each
    to the fold that holds the fewest images so far, so that the folds are of
    near-equal size and every frame of a scan lies in one fold. Over
    ``fold = 0 .. folds - 1`` every case is in exactly one validation fold.

    Returns:
        ``(train, val)``: the other folds, and fold ``fold``.

    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.prefix] = counts.get(c.prefix, 0) + 1
    prefixes = sorted(counts)
    random.Random(seed).shuffle(prefixes)
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for p in prefixes:
        k = min(range(folds), key=lambda i: (sizes[i], i))
        fold_of[p] = k
        sizes[k] += counts[p]
    train = [c for c in cases if fold_of[c.prefix] != fold]
    val = [c for c in cases if fold_of[c.prefix] == fold]
    return train, val


def letterboxed_sample(
    image: NDArray[np.uint8],
    ref: Ellipse,
    size_hw: tuple[int, int],
    keep_aspect: bool = True,
    supersample: int = 8,
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """An image letterboxed into the network input, and its soft ellipse target.

    ``supersample`` is that of :func:`render_ellipse_coverage` (4 renders 4 times
    faster, with coverage within 1/8 of 8's at every pixel).
    """
    lb = Letterbox(image.shape[0], image.shape[1], size_hw[0], size_hw[1], keep_aspect)
    target = render_ellipse_coverage(lb.ellipse_to_net(ref), size_hw, supersample)
    # Nothing outside the letterboxed image can be head.
    valid = lb.apply(np.ones(image.shape, np.uint8), cv2.INTER_NEAREST).astype(np.float32)
    return lb.apply(image), target * valid


class CachedCases:
    """Letterboxed images and soft ellipse targets of cases, held in memory.

    Loading all HC18 images once at network size makes each epoch cheap on a
    CPU (about 60 KB per case at 288x192).
    """

    def __init__(
        self,
        cases: list[Case],
        size_hw: tuple[int, int],
        keep_aspect: bool = True,
        keep_originals: bool = False,
        negatives: bool = False,
    ) -> None:
        self.cases = cases
        self.size_hw = size_hw
        self.keep_aspect = keep_aspect
        self.images: list[NDArray[np.uint8]] = []
        self.targets: list[NDArray[np.float32]] = []
        #: Original ``(height, width)`` of each case.
        self.shapes: list[tuple[int, int]] = []
        #: mm per network pixel of each case (NaN without a pixel size).
        self.mm_per_pixel: list[float] = []
        #: Original images and reference ellipses (only with ``keep_originals``, for crops).
        self.originals: list[tuple[NDArray[np.uint8], Ellipse]] = []
        #: With ``negatives``: each case's box clear of its head
        #: (:func:`~fetalhead.geometry.crop.headless_box`) letterboxed into the network
        #: input, or ``None`` where no box fits.
        self.negatives: list[NDArray[np.uint8] | None] = []
        for case in cases:
            img = read_gray(case.image)
            self.shapes.append((img.shape[0], img.shape[1]))
            lb = Letterbox(img.shape[0], img.shape[1], *size_hw, keep_aspect)
            px = case.pixel_size_mm
            self.mm_per_pixel.append(lb.mm_per_pixel(px) if px else float("nan"))
            ref = label_ellipse(case)
            image, target = letterboxed_sample(img, ref, size_hw, keep_aspect)
            self.images.append(image)
            self.targets.append(target)
            if keep_originals:
                self.originals.append((img, ref))
            if negatives:
                box = headless_box(img, ref)
                self.negatives.append(
                    None
                    if box is None
                    else Letterbox(*box.shape, *size_hw, keep_aspect).apply(
                        img[box.y0 : box.y1, box.x0 : box.x1]
                    )
                )

    def __len__(self) -> int:
        return len(self.cases)
