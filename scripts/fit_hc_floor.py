r"""Fit the non-head envelope's gate on HC in mm, and measure it on data it never saw.

Real ultrasound without a head (``benchmarks/nonhead_crops.py``: boxes cut from HC18
scans clear of the head) mostly gets no number, but where the network finds a region
there, its "HC" is smaller than any foetal head of HC18. The gate follows the rule of
the image gates (``fetalhead.plausibility.gate_between``): halfway between the smallest
reference HC of the HC18 training set and the median HC reported for the training-set
crops below it. It is judged on the test-set crops (images no weights here were trained
on) and on the cross-validated held-out HCs of real heads (each measured by the fold
model that never saw it), and written into the rejector's JSON (``hc_floor``).

Usage::

    python scripts/fit_hc_floor.py \
        --reference-csv ../shared/data/hc18/training_set_pixel_size_and_HC.csv \
        --crops benchmarks/results/nonhead_crops/training_set.csv \
        --judge-crops benchmarks/results/nonhead_crops/test_set.csv \
        --judge-heads benchmarks/results/shipped_cv5/per_image.csv \
        --rejector src/fetalhead/weights/nonhead_rejector.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fetalhead.plausibility import HCFloor, HeadRejector, gate_between
from fetalhead.readers.tables import read_pixel_size_csv


def rows_of(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def finite(rows: list[dict[str, str]], name: str) -> list[tuple[str, float]]:
    """``(filename, value)`` of each row with a finite number in column ``name``."""
    out = []
    for row in rows:
        try:
            v = float(row.get(name) or "nan")
        except ValueError:
            continue
        if math.isfinite(v):
            out.append((row["filename"], v))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-csv", type=Path, required=True, help="real heads' HC")
    ap.add_argument("--crops", type=Path, required=True, help="nonhead_crops.py rows to fit")
    ap.add_argument("--judge-crops", type=Path, required=True, help="nonhead_crops.py rows")
    ap.add_argument("--judge-heads", type=Path, required=True, help="held-out per-image rows")
    ap.add_argument("--head-column", default="plain_hc_mm")
    ap.add_argument("--rejector", type=Path, required=True, help="JSON to update in place")
    args = ap.parse_args()

    heads = np.array(list(read_pixel_size_csv(args.reference_csv).hc_mm.values()))
    crops = finite(rows_of(args.crops), "hc_mm")
    found = gate_between(heads, np.array([v for _, v in crops]), "low")
    if found is None:
        sys.exit("no crop was given an HC below the smallest real head: no gate to fit")
    edge, gate = found
    judge_rows = rows_of(args.judge_crops)
    judged = finite(judge_rows, "hc_mm")
    held_heads = finite(rows_of(args.judge_heads), args.head_column)
    provenance = {
        "command": "python scripts/fit_hc_floor.py " + " ".join(sys.argv[1:]),
        "rule": "halfway between the smallest reference HC of real heads and the median "
        "HC reported for real ultrasound without a head below it; where the pixel size "
        "is known, a found head with a smaller HC is rejected",
        "fitted_on": {
            "heads": f"{args.reference_csv.name}: {len(heads)} reference HCs",
            "non_heads": f"{args.crops}: {len(crops)} crops given an HC, "
            f"{sum(v < edge for _, v in crops)} below the smallest real head",
        },
        "held_out": {
            "crops": str(args.judge_crops),
            "crops_measured": sum(not r["outcome"].startswith("no crop") for r in judge_rows),
            "crops_given_an_hc": len(judged),
            "crops_now_rejected": sorted(n for n, v in judged if v < gate),
            "real_heads": f"{args.judge_heads} ({args.head_column}, cross-validated)",
            "real_heads_measured": len(held_heads),
            "real_heads_rejected": sorted(n for n, v in held_heads if v < gate),
        },
    }
    floor = HCFloor(round(gate, 2), round(edge, 2), provenance)
    rejector = replace(HeadRejector.load(args.rejector), hc_floor=floor)
    text = json.dumps(rejector.to_dict(), indent=2) + "\n"
    args.rejector.write_text(text, encoding="utf-8")
    print(json.dumps({"gate_mm": floor.gate_mm, "edge_mm": floor.edge_mm, **provenance}, indent=2))


if __name__ == "__main__":
    main()
