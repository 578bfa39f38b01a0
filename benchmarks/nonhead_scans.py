"""Ultrasound that shows no head: how often does the shipped pipeline still report a number?

Runs the shipped weights with their defaults (as ``fetalhead predict``) on held-out seeds
of the corpus kinds that the non-head envelope was not fitted on
(``tests/nonhead_corpus.py``'s ``HELD_OUT_KINDS``: synthetic B-mode scans without a
head), and, for comparison, on pydicom's ultrasound frames (``ultrasound``: the empty
obstetric view and the cardiac cine, part of the fitted corpus). For each kind it counts
the images where the network found no region, where the envelope rejected the region
(both ``no_head_found``, no numbers), and where numbers were reported, with or without
the ``uncertain_hc`` flag.

Usage::

    python benchmarks/nonhead_scans.py --seeds 2000 2040
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from fetalhead.measure import Measurement
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from nonhead_corpus import HELD_OUT_KINDS, make

OUTCOMES = ("no region", "rejected", "numbers, uncertain_hc", "numbers, no flag")


def outcome_of(r: Measurement) -> str:
    """Which of :data:`OUTCOMES` a measurement of a non-head is."""
    if r.hc_mm is not None:
        return "numbers, uncertain_hc" if "uncertain_hc" in r.qc else "numbers, no flag"
    return "no region" if r.head_score is None else "rejected"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs=2, type=int, default=(2000, 2040), metavar=("FROM", "TO"))
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = ap.parse_args()
    m = HeadMeasurer.from_pretrained(args.weights)
    seeds = range(*args.seeds)
    print(
        f"# nonhead_scans: seeds {seeds.start}-{seeds.stop - 1}, {args.weights.name} with "
        f"its defaults ({m.backend.name}, TTA {'on' if m.tta else 'off'})\n"
    )
    print(f"| kind | images | {' | '.join(OUTCOMES)} |")
    print(f"|---|---|{'---|' * len(OUTCOMES)}")
    for kind in (*HELD_OUT_KINDS, "ultrasound"):
        counts = Counter(
            outcome_of(m.measure(make(kind, s), 0.15, filename=f"{kind}-{s}")) for s in seeds
        )
        cells = " | ".join(str(counts[o]) for o in OUTCOMES)
        print(f"| {kind} | {len(seeds)} | {cells} |")


if __name__ == "__main__":
    main()
