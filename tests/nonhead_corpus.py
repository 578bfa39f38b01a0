"""A corpus of images that are not a foetal head in ultrasound, generated from a seed.

Kinds: constant, gradient, noise, checkerboard, geometric shapes, rings (filled,
outlined, concentric, on black or on gray), natural and rendered images
(scikit-image's bundled data), text rendered as an image, and other ultrasound
content (pydicom's cardiac and empty obstetric examples). Used by the tests
(seeds below 1000) and by ``scripts/fit_nonhead.py`` (seeds from 1000), so the
rejection is never judged on the images it was fitted to.

:data:`HELD_OUT_KINDS` were added after the envelope was fitted and are not fitted on:
``scan``, a synthetic B-mode scan without a head (speckle in a sector-shaped field of
view, over smooth tissue with dark fluid pockets and bright specular lines).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from fetalhead.geometry.crop import headless_box
from fetalhead.geometry.ellipse import Ellipse

SHAPE = (540, 800)
NATURAL = ("camera", "astronaut", "coffee", "chelsea", "coins", "moon", "page", "horse",
           "rocket", "brick", "grass", "gravel", "clock", "hubble_deep_field",
           "immunohistochemistry", "retina", "cell", "logo", "colorwheel")  # fmt: skip
KINDS = ("constant", "gradient", "noise", "checkerboard", "shapes", "ring", "natural", "text",
         "ultrasound")  # fmt: skip
#: Kinds that ``scripts/fit_nonhead.py`` does not fit on (``benchmarks/nonhead_scans.py``).
HELD_OUT_KINDS = ("scan",)


def _fit(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gray uint8 at a random size near 800 x 540."""
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    h = int(rng.integers(400, 700))
    w = int(h * rng.uniform(1.2, 1.6))
    return cv2.resize(img.astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA)


def make(kind: str, seed: int) -> np.ndarray:
    """One non-head image of a kind."""
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    if kind == "constant":
        return np.full(SHAPE, int(rng.integers(0, 256)), np.uint8)
    if kind == "gradient":
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
        g = (t * rng.uniform(100, 255) + rng.uniform(0, 50)).clip(0, 255)
        img = np.tile(g, (h, 1)) if len(t) == w else np.tile(g[:, None], (1, w))
        return img.astype(np.uint8)
    if kind == "noise":
        if rng.random() < 0.5:
            return rng.integers(0, 256, SHAPE).astype(np.uint8)
        return (
            rng.normal(rng.uniform(60, 190), rng.uniform(10, 60), SHAPE)
            .clip(0, 255)
            .astype(np.uint8)
        )
    if kind == "checkerboard":
        s = int(rng.integers(8, 80))
        yy, xx = np.mgrid[:h, :w]
        return (((yy // s + xx // s) % 2) * 255).astype(np.uint8)
    if kind == "shapes":
        img = np.full(SHAPE, int(rng.integers(0, 60)), np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            c = int(rng.integers(120, 256))
            x, y = int(rng.integers(50, w - 50)), int(rng.integers(50, h - 50))
            r = int(rng.integers(20, 150))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), c, -1)
            else:
                pts = rng.integers(0, [w, h], size=(3, 2)).astype(np.int32)
                cv2.fillPoly(img, [pts], c)
        return img
    if kind == "ring":
        img = np.full(SHAPE, int(rng.choice([0, 0, int(rng.integers(0, 120))])), np.uint8)
        cx, cy = int(rng.integers(250, 550)), int(rng.integers(180, 360))
        a, b = int(rng.integers(60, 220)), int(rng.integers(50, 170))
        ang = float(rng.uniform(0, 180))
        thick = int(rng.choice([-1, 2, 6, 15]))
        cv2.ellipse(img, (cx, cy), (a, min(b, a)), ang, 0, 360, int(rng.integers(150, 256)), thick)
        if rng.random() < 0.3:
            cv2.ellipse(img, (cx, cy), (a // 2, min(b, a) // 2), ang, 0, 360, 200, 3)
        return img
    if kind == "natural":
        import skimage.data

        return _fit(getattr(skimage.data, NATURAL[seed % len(NATURAL)])(), rng)
    if kind == "text":
        img = np.full(SHAPE, int(rng.choice([0, 255])), np.uint8)
        ink = 255 - int(img[0, 0])
        words = ["head", "circumference", "fetal", "ultrasound", "0123456789", "HC 175 mm"]
        for row in range(int(rng.integers(3, 12))):
            text = " ".join(rng.choice(words, size=int(rng.integers(2, 5))))
            cv2.putText(img, text, (int(rng.integers(5, 200)), 40 + row * 45),
                        cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.7, 1.6)), ink, 2)  # fmt: skip
        return img
    if kind == "ultrasound":
        from pydicom import examples

        from fetalhead.readers import read_image

        name = ("palette_color", "ybr_color")[seed % 2]
        frames = read_image(examples.get_path(name))
        return _fit(frames[seed % len(frames)].pixels, rng)
    if kind == "scan":
        return _scan(rng)
    raise ValueError(f"unknown kind {kind!r}")


def _scan(rng: np.random.Generator) -> np.ndarray:
    """A synthetic B-mode scan with no head: log-compressed speckle in a sector.

    Smooth tissue echogenicity, 1-3 dark fluid pockets (ellipses 40-300 px across, the
    size of first- and second-trimester heads), 0-3 bright specular lines, Rayleigh
    speckle, and a sector-shaped field of view with its apex above the top edge.
    """
    h, w = SHAPE
    coarse = rng.uniform(0.2, 1.0, (h // 40 + 1, w // 40 + 1)).astype(np.float32)
    tissue = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0.05, 1.2)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(200, 600)), int(rng.integers(120, 420)))
        axes = (int(rng.integers(30, 150)), int(rng.integers(20, 110)))
        cv2.ellipse(tissue, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(0.02, 0.15)), -1)  # fmt: skip
    for _ in range(int(rng.integers(0, 4))):
        p, q = rng.integers(0, [w, h], size=(2, 2))
        cv2.line(tissue, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])),
                 float(rng.uniform(1.5, 2.5)), int(rng.integers(3, 10)))  # fmt: skip
    tissue = cv2.GaussianBlur(tissue, (0, 0), 3)
    speckle = cv2.GaussianBlur(
        rng.rayleigh(1.0, (h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.8, 1.6))
    )
    img = np.log1p(4.0 * tissue * speckle) / np.log1p(12.0)
    yy, xx = np.mgrid[:h, :w]
    apex_x, apex_y = w / 2 + rng.uniform(-40, 40), -rng.uniform(20, 80)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    radius = np.hypot(xx - apex_x, yy - apex_y)
    sector = (np.abs(angle) < rng.uniform(30, 45)) & (radius < h * rng.uniform(0.95, 1.1) - apex_y)
    return ((img * 255 * rng.uniform(0.7, 1.0)).clip(0, 255) * sector).astype(np.uint8)


def corpus(seeds: range) -> Iterator[tuple[str, int, np.ndarray]]:
    """Every kind at every seed: ``(kind, seed, image)``."""
    for seed in seeds:
        for kind in KINDS:
            yield kind, seed, make(kind, seed)


def zoomed(pixels: np.ndarray, pixel_mm: float, width: int = SHAPE[1]) -> tuple[np.ndarray, float]:
    """``pixels`` zoomed (bilinear) to ``width`` pixels wide, and the zoomed pixel size in mm.

    As a sonographer's zoom shows a region: the pixel size shrinks by the zoom.
    """
    zoom = width / pixels.shape[1]
    size = (width, round(pixels.shape[0] * zoom))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR), pixel_mm / zoom


def headless_crop(
    image: np.ndarray, head: Ellipse, pixel_mm: float, width: int = SHAPE[1], **box: float
) -> tuple[np.ndarray, float, tuple[int, int, int, int]] | None:
    """``headless_box``'s box :func:`zoomed` to ``width``: ``(crop, pixel mm, box)``.

    ``box`` is ``(x0, y0, width, height)``; ``None`` where no box fits. The keyword
    arguments go to :func:`fetalhead.geometry.crop.headless_box`.
    """
    found = headless_box(image, head, **box)
    if found is None:
        return None
    pixels = image[found.y0 : found.y1, found.x0 : found.x1]
    return (*zoomed(pixels, pixel_mm, width), (found.x0, found.y0, *found.shape[::-1]))
