"""Post-processing variants on the shipped model's own validation split, paired.

An independent check of a choice made on the cross-validation folds
(``cv_report.py``): the shipped weights were trained on 776 images and never on
their 128 validation images, none of which the fold models' choice depended on
through this model. Prints ADF and third-trimester DF for each variant, with
95 % bootstrap intervals over scan prefixes, without TTA.

Usage::

    python benchmarks/shipped_val_variants.py ../shared/data/hc18/training_set
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from cv_report import cluster_bootstrap

from fetalhead.data import find_cases
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.infer.backends import preprocess
from fetalhead.model import Checkpoint
from fetalhead.postprocess import postprocess
from fetalhead.predict import DEFAULT_WEIGHTS
from fetalhead.readers import read_gray

VARIANTS = {"default (0.5)": {}, "level0.55": {"level": 0.55}, "level0.6": {"level": 0.6},
            "level0.65": {"level": 0.65}, "level0.7": {"level": 0.7}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    args = ap.parse_args()
    ck = Checkpoint.load(DEFAULT_WEIGHTS)
    model = ck.build().eval()
    val = set(ck.meta["split"]["val_files"])
    cases = [c for c in find_cases(args.data) if c.image.name in val]
    df = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for c in cases:
            x, lb = preprocess(read_gray(c.image), ck.config)
            prob = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0].numpy()
            for v, kw in VARIANTS.items():
                e, _, _, _ = postprocess(prob, lb, "full", **kw)
                df[v].append(e.perimeter * c.pixel_size_mm - c.hc_mm if e else np.nan)
    g = np.array([c.prefix for c in cases])
    third = np.array([trimester(hadlock_1984(c.hc_mm).weeks) == "third" for c in cases])
    base = np.abs(np.array(df["default (0.5)"]))
    print(f"# shipped weights, {len(cases)} validation images, float32, no TTA")
    print("| variant | ADF mm | ADF - default mm | third-trimester DF mm |")
    print("|---|---|---|---|")
    for v in VARIANTS:
        d = np.array(df[v])
        a, p = cluster_bootstrap(np.abs(d), g), cluster_bootstrap(np.abs(d) - base, g)
        t = cluster_bootstrap(d[third], g[third])
        print(f"| {v} | {a[0]:.2f} ({a[1]:.2f}-{a[2]:.2f}) | {p[0]:+.2f} ({p[1]:+.2f} to "
              f"{p[2]:+.2f}) | {t[0]:+.2f} ({t[1]:+.2f} to {t[2]:+.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
