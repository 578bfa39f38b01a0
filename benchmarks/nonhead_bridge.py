"""Does the network itself know a cardiac view from a foetal head? A probe on its bridge.

The envelope of :mod:`fetalhead.plausibility` reads a few image features, which do not
tell pydicom's cardiac cine from a head. The network's deepest features (the bridge
between encoder and decoder, 256 channels at 1/16 of the input) might. This fits a
logistic probe on them, pooled over the image (mean and maximum of each channel), to
HC18 training heads against real ultrasound without a head (the training set's
headless crops, ``tests/nonhead_corpus.headless_crop`` around the expert ellipse) and
the generated non-head corpus (seeds 1000-1029, no ultrasound kind), with its gate set
by the envelope's rule (halfway between the lowest fitted head and the median fitted
non-head below it). It is then judged on what it was not fitted on: the 335 test-set
heads (none may be rejected), the test set's headless crops, the corpus at seeds
2000-2019, the synthetic B-mode scans, and pydicom's two ultrasound examples (the
obstetric view without a head, and the cardiac cine, as frames and as the corpus's
transformed copies).

Usage::

    python benchmarks/nonhead_bridge.py ../shared/data/hc18 --cache runs/nonhead_bridge.npz \\
        > benchmarks/results/nonhead_bridge/report.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from nonhead_crops import heads

from fetalhead.plausibility import gate_between
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_image
from nonhead_corpus import KINDS, headless_crop, make

#: Groups fitted on (heads first), then the groups judged.
FIT_HEADS, FIT_NON_HEADS = ("head_train",), ("crop_train", "corpus_fit")
JUDGED = ("head_test", "crop_test", "corpus_held", "scan_held", "obstetric_view", "cardiac",
          "cardiac_frames")  # fmt: skip
L2 = (1e-3, 1e-2, 1e-1)


def images(hc18: Path, m: HeadMeasurer) -> Iterator[tuple[str, NDArray[np.uint8], float]]:
    """``(group, image, pixel size)`` of every group."""
    from pydicom import examples

    train, test = hc18 / "training_set", hc18 / "test_set"
    for _, img, px, e in heads(train, hc18 / "training_set_pixel_size_and_HC.csv", "reference", m):
        yield "head_train", img, px
        if (crop := headless_crop(img, e, px)) is not None:
            yield "crop_train", crop[0], crop[1]
    for _, img, px, e in heads(test, hc18 / "test_set_pixel_size.csv", "predicted", m):
        yield "head_test", img, px
        if e is not None and (crop := headless_crop(img, e, px)) is not None:
            yield "crop_test", crop[0], crop[1]
    others = [k for k in KINDS if k != "ultrasound"]
    for seed in range(1000, 1030):
        for kind in others:
            yield "corpus_fit", make(kind, seed), 0.15
    for seed in range(2000, 2020):
        for kind in others:
            yield "corpus_held", make(kind, seed), 0.15
    for seed in range(2000, 2040):
        yield "scan_held", make("scan", seed), 0.15
    for seed in range(2000, 2060):  # even seeds: palette_color, odd: ybr_color
        yield ("cardiac" if seed % 2 else "obstetric_view"), make("ultrasound", seed), 0.15
    for frame in read_image(examples.get_path("ybr_color")):
        yield "cardiac_frames", frame.pixels, 0.3


def bridge_features(hc18: Path, weights: Path) -> dict[str, NDArray]:
    """Pooled bridge features of every image, its group, and whether it gets a number today."""
    m = HeadMeasurer.from_pretrained(weights, backend="torch-bf16", tta=False, threads=1)
    pooled: list[NDArray[np.float32]] = []

    def hook(_module: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        o = out.float()
        pooled.append(torch.cat([o.mean((2, 3)), o.amax((2, 3))], 1)[0].numpy())

    m.backend.model.bridge[2].register_forward_hook(hook)  # type: ignore[attr-defined]
    groups, numbers, feats = [], [], []
    for group, img, px in images(hc18, m):
        pooled.clear()
        r = m.measure(img, px)
        groups.append(group)
        numbers.append(r.hc_mm is not None)
        feats.append(pooled[-1])
    return {"X": np.stack(feats), "group": np.array(groups), "numbers": np.array(numbers)}


def fit_probe(z: NDArray, y: NDArray, l2: float) -> tuple[NDArray, float]:
    """Class-balanced L2 logistic regression (LBFGS): weights and bias."""
    zt, yt = torch.tensor(z, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    cw = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    opt = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(zt @ w + b, yt, reduction="none")
        loss = (cw * bce).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hc18", type=Path, help="the HC18 folder (training_set, test_set, CSVs)")
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--cache", type=Path, help="features are read from / written to here")
    args = ap.parse_args()
    if args.cache and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        data = bridge_features(args.hc18, args.weights)
        if args.cache:
            np.savez(args.cache, **data)
    x, group, numbers = data["X"], data["group"], data["numbers"]
    fit = np.isin(group, FIT_HEADS + FIT_NON_HEADS)
    heads_fit = np.isin(group, FIT_HEADS)
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = (x - mu) / sd
    print(f"# nonhead_bridge: {args.weights.name}, pooled bridge features ({x.shape[1]}), "
          "logistic probe; torch-bf16, TTA off\n")  # fmt: skip
    print("Per group: images rejected by the probe (of them, images that `predict` gives a "
          "number today, rejected).\n")  # fmt: skip
    print("| group | images | get a number today | " + " | ".join(f"l2 {c:g}" for c in L2) + " |")
    print("|---|---|---|" + "---|" * len(L2))
    rejected = []
    for l2 in L2:
        w, b = fit_probe(z[fit], heads_fit[fit].astype(float), l2)
        s = z @ w + b
        found = gate_between(s[heads_fit], s[fit & ~heads_fit], "low")
        rejected.append(s < (found[1] if found else s[heads_fit].min()))
    for g in FIT_HEADS + FIT_NON_HEADS + JUDGED:
        k = group == g
        cells = [f"{int(r[k].sum())} ({int((r & numbers)[k].sum())})" for r in rejected]
        print(f"| {g} | {int(k.sum())} | {int(numbers[k].sum())} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
