"""Does averaging the maps of two independently trained models beat each alone?

Two sets of weights trained on the same prefix split (so that both hold out the same
validation images) measure those images alone and as an ensemble: the mean of their
two probability maps, post-processed as ``fetalhead predict`` does (the first weights'
boundary level, qc flag and non-head check; no TTA). Prints DSC, HD, ADF and DF of
each, the paired ADF differences with 95 % bootstrap intervals over scan prefixes,
by trimester, and the network time of each, so that the gain can be set against an
ensemble's twice the network time.

Usage::

    python benchmarks/ensemble_val.py ../shared/data/hc18/training_set A.pt B.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from cv_report import TRIMESTERS, cluster_bootstrap, fmt

from fetalhead.data import find_cases
from fetalhead.evaluate import evaluate_case
from fetalhead.infer.backends import preprocess
from fetalhead.model import Checkpoint
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    ca, cb = Checkpoint.load(args.a), Checkpoint.load(args.b)
    val = sorted(ca.meta["split"]["val_files"])
    if val != sorted(cb.meta["split"]["val_files"]):
        ap.error("the two weights hold out different validation images")
    if ca.config.input_hw != cb.config.input_hw:
        ap.error("the two weights take different input sizes")
    ma = HeadMeasurer(ca, backend="torch", tta=False)
    mb = HeadMeasurer(cb, backend="torch", tta=False)
    wanted = set(val)
    cases = [c for c in find_cases(args.data) if c.image.name in wanted and c.pixel_size_mm]
    rows: dict[str, list] = {"a": [], "b": [], "ensemble": []}
    seconds = {"a": 0.0, "b": 0.0}
    for c in cases:
        img = read_gray(c.image)
        x, lb = preprocess(img, ca.config)
        batch = x[None, None]
        probs = {}
        for key, m in (("a", ma), ("b", mb)):
            t0 = time.perf_counter()
            probs[key] = m.backend(batch)[0]
            seconds[key] += time.perf_counter() - t0
        probs["ensemble"] = 0.5 * (probs["a"] + probs["b"])
        for key, prob in probs.items():
            m = ma._finish(img, prob, lb, c.pixel_size_mm, c.image.name)
            rows[key].append(evaluate_case(c, m, img.shape))
    both = [
        i
        for i in range(len(cases))
        if all(rows[k][i].adf_mm is not None for k in ("a", "b", "ensemble"))
    ]
    g = np.array([cases[i].prefix for i in both])
    tri = np.array([rows["a"][i].trimester for i in both])
    col = {
        (k, f): np.array([getattr(rows[k][i], f) for i in both], float)
        for k in rows
        for f in ("dsc", "hd_mm", "adf_mm", "df_mm")
    }
    print(f"{len(both)} of {len(cases)} validation images measured by all three\n")
    print("| maps | DSC % | HD mm | ADF mm | DF mm | ADF - ensemble's mm | network s/img |")
    print("|---|---|---|---|---|---|---|")
    names = {"a": args.a.name, "b": args.b.name, "ensemble": "mean of both"}
    for k in ("a", "b", "ensemble"):
        diff = (
            ""
            if k == "ensemble"
            else fmt(cluster_bootstrap(col[k, "adf_mm"] - col["ensemble", "adf_mm"], g), sign=True)
        )
        secs = seconds["a"] + seconds["b"] if k == "ensemble" else seconds[k]
        print(
            f"| {names[k]} | {fmt(cluster_bootstrap(col[k, 'dsc'], g), 100)} | "
            f"{fmt(cluster_bootstrap(col[k, 'hd_mm'], g))} | "
            f"{fmt(cluster_bootstrap(col[k, 'adf_mm'], g))} | "
            f"{fmt(cluster_bootstrap(col[k, 'df_mm'], g), sign=True)} | {diff} | "
            f"{secs / len(cases):.3f} |"
        )
    print("\n| trimester | n | ADF a | ADF b | ADF ensemble | DF a | DF b | DF ensemble |")
    print("|---|---|---|---|---|---|---|---|")
    for t in TRIMESTERS:
        s = tri == t
        cells = [fmt(cluster_bootstrap(col[k, "adf_mm"][s], g[s])) for k in rows]
        cells += [fmt(cluster_bootstrap(col[k, "df_mm"][s], g[s]), sign=True) for k in rows]
        print(f"| {t} | {s.sum()} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
