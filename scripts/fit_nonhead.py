r"""Fit the non-head envelope and measure its error rates on data it never saw.

Heads: HC18 images. Non-heads: the generated corpus of tests/nonhead_corpus.py.
The features (``fetalhead.plausibility.head_features``) are those of the head the
shipped network finds; images where it finds none need no rejection. Gates are
fitted on the HC18 test set (335 images the network was never trained on) and
corpus seeds 1000-1029, then checked on the 904 HC18 training images (false
rejections) and on corpus seeds 2000-2019 (rejection rate per kind). Features are
cached in ``--cache`` so that a refit takes seconds.

Usage::

    python scripts/fit_nonhead.py ../shared/data/hc18 --out \
        src/fetalhead/weights/nonhead_rejector.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from fetalhead.plausibility import FEATURES, HeadRejector, fit_envelope, head_features
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray
from nonhead_corpus import KINDS, corpus


def features_of(m: HeadMeasurer, img: np.ndarray) -> list[float]:
    """The features of the found head, or NaNs where the network finds none."""
    r = m.measure(img, 0.15)
    if r.ellipse is None or r.contour is None or r.confidence is None:
        return [float("nan")] * len(FEATURES)
    f = head_features(img, r.ellipse, r.contour, r.confidence)
    return [f[k] for k in FEATURES]


def collect(root: Path, cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files}
    m = HeadMeasurer.from_pretrained(backend="torch", tta=False, reject_non_heads=False)
    test_imgs = sorted((root / "test_set").glob("*HC.png"))
    train_imgs = sorted((root / "training_set").glob("*HC.png"))
    fit_neg = list(corpus(range(1000, 1030)))
    held_neg = list(corpus(range(2000, 2020)))
    out = {
        "fit_heads": np.array([features_of(m, read_gray(p)) for p in test_imgs]),
        "held_heads": np.array([features_of(m, read_gray(p)) for p in train_imgs]),
        "held_head_names": np.array([p.name for p in train_imgs]),
        "fit_non_heads": np.array([features_of(m, img) for _, _, img in fit_neg]),
        "held_non_heads": np.array([features_of(m, img) for _, _, img in held_neg]),
        "held_non_head_kinds": np.array([k for k, _, _ in held_neg]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hc18", help="folder with training_set/ and test_set/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default="runs/nonhead_features.npz")
    args = ap.parse_args()
    t0 = time.time()
    d = collect(Path(args.hc18), Path(args.cache))
    found = lambda a: a[~np.isnan(a).any(axis=1)]  # noqa: E731
    gates, edges = fit_envelope(found(d["fit_heads"]), found(d["fit_non_heads"]))
    rejector = HeadRejector(gates, edges, {})

    def rejected(row: np.ndarray) -> bool:
        return bool(np.isnan(row).any()) or not rejector.is_head(
            dict(zip(FEATURES, row, strict=True))
        )

    held = d["held_heads"]
    false_rej = [str(n) for n, r in zip(d["held_head_names"], held, strict=True) if rejected(r)]
    fit_false = int(sum(rejected(r) for r in d["fit_heads"]))
    kinds = d["held_non_head_kinds"]
    by_kind = {}
    for k in KINDS:
        rows = d["held_non_heads"][kinds == k]
        by_kind[k] = f"{sum(rejected(r) for r in rows)}/{len(rows)}"
    provenance = {
        "command": "python scripts/fit_nonhead.py " + " ".join(sys.argv[1:]),
        "network": "shipped hc18_resunet16.pt, float32, no TTA",
        "rule": "each gate halfway between the most extreme fitted head and the median "
        "fitted non-head beyond it; a found head outside any gate is rejected",
        "fitted_on": {
            "heads": f"HC18 test_set, {len(d['fit_heads'])} images",
            "non_heads": "tests/nonhead_corpus.py seeds 1000-1029 "
            f"({len(found(d['fit_non_heads']))} regions found by the network)",
            "heads_rejected": fit_false,
        },
        "held_out": {
            "hc18_training_images": len(held),
            "hc18_rejected": len(false_rej),
            "hc18_rejected_files": false_rej,
            "corpus_seeds": "2000-2019 (no head found by the network counts as rejected)",
            "corpus_rejected_by_kind": by_kind,
        },
        "seconds": round(time.time() - t0),
    }
    rejector = HeadRejector(gates, edges, provenance)
    Path(args.out).write_text(json.dumps(rejector.to_dict(), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rejector.to_dict(), indent=2))


if __name__ == "__main__":
    main()
