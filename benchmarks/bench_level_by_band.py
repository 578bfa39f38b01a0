"""What the boundary level by HC band costs: the shipped weights with one level and by band.

Both measurers run the same images with the same backend, in alternating rounds (this
shared machine's speed drifts), and the table gives the median images/s of the rounds
and the share of images fitted twice (third-band heads). The network runs once either
way; only the ellipse fit is repeated.

Usage::

    python benchmarks/bench_level_by_band.py ../shared/data/hc18/test_set \
        --pixel-size-csv ../shared/data/hc18/test_set_pixel_size.csv
    python benchmarks/bench_level_by_band.py examples --pixel-size-csv examples/pixel_size.csv
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.readers.tables import read_pixel_size_csv
from fetalhead.uncertainty import band_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--pixel-size-csv", type=Path, required=True)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    table = read_pixel_size_csv(args.pixel_size_csv).pixel_size_mm
    names = sorted(n for n in table if (args.folder / n).exists())
    images = [read_gray(args.folder / n) for n in names]
    pixel = [table[n] for n in names]
    by_band = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend=args.backend)
    one = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend=args.backend)
    one.band_levels = None
    speeds: dict[str, list[float]] = {"one level (P = 0.6)": [], "level by HC band": []}
    twice = 0
    for _ in range(args.rounds):
        for label, m in (("one level (P = 0.6)", one), ("level by HC band", by_band)):
            t0 = time.perf_counter()
            out = []
            for i in range(0, len(images), args.batch_size):
                out += m.measure_batch(
                    images[i : i + args.batch_size], pixel[i : i + args.batch_size]
                )
            speeds[label].append(len(images) / (time.perf_counter() - t0))
            if m is by_band:
                twice = sum(r.hc_mm is not None and band_of(r.hc_mm) == "third" for r in out)
    print(
        f"# {len(images)} images of {args.folder}, backend {by_band.backend_name}, "
        f"batch {args.batch_size}, {args.rounds} rounds, {torch.get_num_threads()} threads"
    )
    print("| measurer | img/s (median of rounds) | range |")
    print("|---|---|---|")
    for label, v in speeds.items():
        print(f"| {label} | {statistics.median(v):.1f} | {min(v):.1f}-{max(v):.1f} |")
    print(
        f"images reported in the third band: {twice} of {len(images)} (fitted twice; "
        "the band that decides is read at P = 0.55)"
    )


if __name__ == "__main__":
    main()
