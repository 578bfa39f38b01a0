"""Fit the non-head rejection model and measure its error rates on data it never saw.

Positives: HC18 images (foetal heads in ultrasound). Negatives: the generated
corpus of tests/nonhead_corpus.py. The features are those of
``fetalhead.plausibility.head_features`` for the head the shipped network finds
(images where it finds none need no rejection). The model is a standardised
logistic regression with an L2 penalty; its threshold sits ``--margin`` logits
below the lowest-scoring positive used for fitting, so that real heads keep their
numbers with room to spare. Reported: the false-rejection rate on HC18 images not
used for fitting, and the rejection rate of each corpus kind on seeds not used for
fitting.

Usage::

    python scripts/fit_nonhead.py ../shared/data/hc18 \
        --out src/fetalhead/weights/nonhead_rejector.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from fetalhead.plausibility import FEATURES, HeadRejector, head_features
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray
from nonhead_corpus import KINDS, corpus


def features_of(m: HeadMeasurer, img: np.ndarray) -> list[float] | None:
    r = m.measure(img, 0.15)
    if r.ellipse is None or r.contour is None or r.confidence is None:
        return None
    f = head_features(img, r.ellipse, r.contour, r.confidence)
    return [f[k] for k in FEATURES]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Newton's method on the L2-penalised log-likelihood (intercept not penalised)."""
    xa = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(xa.shape[1])
    pen = np.full(xa.shape[1], l2)
    pen[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-xa @ w))
        g = xa.T @ (p - y) + pen * w
        h = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(pen)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[1:], float(w[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hc18", help="folder with training_set/ and test_set/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--margin", type=float, default=2.0, help="logits below the lowest positive")
    args = ap.parse_args()
    t0 = time.time()
    m = HeadMeasurer.from_pretrained(backend="torch", tta=False, reject_non_heads=False)
    root = Path(args.hc18)
    fit_pos = [features_of(m, read_gray(p)) for p in sorted((root / "test_set").glob("*HC.png"))]
    fit_neg = [features_of(m, img) for _, _, img in corpus(range(1000, 1030))]
    pos = np.array([f for f in fit_pos if f is not None])
    neg = np.array([f for f in fit_neg if f is not None])
    x = np.vstack([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    mean, sd = x.mean(0), x.std(0) + 1e-9
    coef, intercept = fit_logistic((x - mean) / sd, y)
    logit = lambda f: intercept + float(np.dot(coef, (np.asarray(f) - mean) / sd))  # noqa: E731
    thr_logit = min(logit(f) for f in pos) - args.margin
    threshold = 1.0 / (1.0 + math.exp(-thr_logit))

    # Held out: HC18 training images (heads) and corpus seeds 2000-2019 (non-heads).
    train_imgs = sorted((root / "training_set").glob("*HC.png"))
    held_pos = [features_of(m, read_gray(p)) for p in train_imgs]
    rejected_heads = [
        p.name
        for p, f in zip(train_imgs, held_pos, strict=True)
        if f is not None and logit(f) < thr_logit
    ]
    no_head = [p.name for p, f in zip(train_imgs, held_pos, strict=True) if f is None]
    by_kind: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
    for kind, _, img in corpus(range(2000, 2020)):
        f = features_of(m, img)
        by_kind[kind][1] += 1
        by_kind[kind][0] += int(f is None or logit(f) < thr_logit)
    rejector = HeadRejector(
        tuple(float(v) for v in coef),
        intercept,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in sd),
        threshold,
        {
            "command": "python scripts/fit_nonhead.py " + " ".join(sys.argv[1:]),
            "network": "shipped hc18_resunet16.pt, float32, no TTA",
            "fitted_on": {
                "heads": f"HC18 test_set, {len(pos)} images where a head was found",
                "non_heads": f"tests/nonhead_corpus.py seeds 1000-1029, {len(neg)} found regions",
            },
            "threshold": f"{args.margin} logits below the lowest-scoring fitted head",
            "held_out": {
                "hc18_training_images": len(train_imgs),
                "hc18_rejected": len(rejected_heads),
                "hc18_rejected_files": rejected_heads,
                "hc18_no_head_found_by_network": len(no_head),
                "corpus_seeds": "2000-2019",
                "corpus_rejected_by_kind": {k: f"{r}/{n}" for k, (r, n) in by_kind.items()},
            },
            "seconds": round(time.time() - t0),
        },
    )
    Path(args.out).write_text(json.dumps(rejector.to_dict(), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rejector.provenance, indent=2))


if __name__ == "__main__":
    main()
