"""Shared fixtures: tiny models, synthetic data and an oracle backend."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fetalhead.geometry.ellipse import Ellipse, render_ellipse_coverage, render_ellipse_mask
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.model import Checkpoint, ModelConfig, ResUNet

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"
MINI = DATA / "hc18_mini"
EXAMPLES = Path(__file__).parents[1] / "examples"

TINY = ModelConfig(start_filters=2, dropout=0.0, input_hw=(64, 96))
#: A fine network input for tests whose backend segments the image itself.
FINE_CONFIG = ModelConfig(start_filters=2, dropout=0.0, input_hw=(192, 288))


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised tiny Res-U-Net saved as a checkpoint."""
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    Checkpoint.from_model(ResUNet(TINY), {"data_note": "random init (tests)"}).save(path)
    return path


def synthetic_scan(
    e: Ellipse, shape: tuple[int, int] = (270, 400), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright elliptical skull ring, and its filled mask."""
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 12, shape)
    outer = render_ellipse_mask(e, shape).astype(bool)
    inner = render_ellipse_mask(Ellipse(e.cx, e.cy, e.a - 6, e.b - 6, e.angle), shape).astype(bool)
    img[outer & ~inner] += 150
    img[inner] += 30
    return np.clip(img, 0, 255).astype(np.uint8), outer.astype(np.uint8)


def make_mask_dataset(root: Path, n: int, shape: tuple[int, int] = (135, 200)) -> Path:
    """A simple-layout data set (NNN_HC.png + NNN_HC_Mask.png) of synthetic heads."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = ["filename,pixel size(mm)"]
    for i in range(n):
        h, w = shape
        e = Ellipse(
            w / 2 + rng.uniform(-15, 15),
            h / 2 + rng.uniform(-10, 10),
            rng.uniform(30, 50),
            rng.uniform(22, 35),
            rng.uniform(0, math.pi),
        )
        img, mask = synthetic_scan(e, shape, seed=i)
        name = f"{i // 2:03d}_HC.png" if i % 2 == 0 else f"{i // 2:03d}_2HC.png"
        cv2.imwrite(str(root / name), img)
        cv2.imwrite(str(root / name.replace(".png", "_Mask.png")), mask * 255)
        rows.append(f"{name},0.2")
    (root / "pixel_size.csv").write_text("\n".join(rows) + "\n")
    return root


class OracleBackend:
    """Returns the soft coverage of known ellipses, as a perfect network would."""

    name = "oracle"

    def __init__(self, ellipses: list[Ellipse], shapes: list[tuple[int, int]], cfg: ModelConfig):
        self.ellipses = ellipses
        self.shapes = shapes
        self.cfg = cfg
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for _ in range(len(batch)):
            e, (h, w) = self.ellipses[self.calls], self.shapes[self.calls]
            self.calls += 1
            lb = Letterbox(h, w, *self.cfg.input_hw, self.cfg.keep_aspect)
            valid = lb.apply(np.ones((h, w), np.uint8), cv2.INTER_NEAREST)
            out.append(render_ellipse_coverage(lb.ellipse_to_net(e), self.cfg.input_hw) * valid)
        return np.stack(out).astype(np.float32)


#: The benchmark scripts, which some tests load as modules.
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (with ``benchmarks/`` on the path for its imports)."""
    import importlib.util
    import sys

    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict_cli(inputs: list, out: Path, weights: Path, *extra: str) -> int:
    """Run ``fetalhead predict`` in-process with the usual test options."""
    from fetalhead.cli import main

    args = ["predict", *map(str, inputs), "--out", str(out), "--weights", str(weights)]
    return main([*args, "--no-progress", *extra])


class RingBackend:
    """Segments the bright skull ring of :func:`synthetic_scan` images from their pixels.

    Unlike :class:`OracleBackend` it needs no list of ellipses: it thresholds the
    network input, fills the ring and softens the edge, so it follows the image
    through any resampling or letterboxing, as a trained network would.
    """

    name = "ring"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        out = []
        for x in batch[:, 0]:
            filled = ndimage.binary_fill_holes(x > 0.5).astype(np.float32)
            out.append(ndimage.gaussian_filter(filled, 1.0))
        return np.stack(out).astype(np.float32)
