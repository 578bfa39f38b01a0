"""The HCs that several weights report for the same images, side by side, and which moved.

Each input is a ``predictions.csv`` of ``fetalhead predict``, named on the command line.
The first is the reference. The script writes one row per image (``hc_mm_NAME`` and
``qc_NAME`` for each input, in the order given) and prints, for each other input, how
many images it measured, how many lost or gained a number, and which HCs moved by more
than ``--moved`` mm against the reference. No labels are read, so it suits the HC18
test images, which have none:

    python benchmarks/join_predictions.py shipped=out/test/predictions.csv \\
        fold0=out/fold0/predictions.csv --moved 5 --out joined.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def read_hc(path: Path) -> dict[str, tuple[float, str]]:
    """``filename -> (HC in mm or NaN, qc)`` from one ``predictions.csv`` (first frames)."""
    out: dict[str, tuple[float, str]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("frame", "0") not in ("", "0"):
                continue
            hc = float(row["hc_mm"]) if row["hc_mm"] else math.nan
            out[row["filename"]] = (hc, row["qc"])
    return out


def moved(
    ref: dict[str, tuple[float, str]], other: dict[str, tuple[float, str]], threshold: float
) -> tuple[list[tuple[str, float, float]], list[str], list[str]]:
    """Images whose HC moved by more than ``threshold`` mm, lost a number, or gained one."""
    far, lost, gained = [], [], []
    for name in sorted(ref.keys() & other.keys()):
        a, b = ref[name][0], other[name][0]
        if math.isnan(a) and not math.isnan(b):
            gained.append(name)
        elif math.isnan(b) and not math.isnan(a):
            lost.append(name)
        elif abs(b - a) > threshold:
            far.append((name, a, b))
    return far, lost, gained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "inputs", nargs="+", help="NAME=PATH/predictions.csv; the first is the reference"
    )
    ap.add_argument("--moved", type=float, default=5.0, help="report HCs that moved by more (mm)")
    ap.add_argument("--out", type=Path, help="write the joined table here")
    args = ap.parse_args()
    named: dict[str, dict[str, tuple[float, str]]] = {}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"inputs are NAME=PATH, got {item!r}")
        named[name] = read_hc(Path(path))
    ref_name, *others = named
    ref = named[ref_name]
    for name in others:
        far, lost, gained = moved(ref, named[name], args.moved)
        shown = ", ".join(f"{f} {a:.1f} -> {b:.1f}" for f, a, b in far) or "none"
        print(
            f"{name} against {ref_name}: {len(ref.keys() & named[name].keys())} images in both; "
            f"HC moved by over {args.moved:g} mm: {len(far)} ({shown}); "
            f"number lost: {len(lost)} {lost}; number gained: {len(gained)} {gained}"
        )
    if args.out:
        names = sorted(set().union(*named.values()))
        with open(args.out, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["filename", *(f"{c}_{n}" for n in named for c in ("hc_mm", "qc"))])
            for f in names:
                cells = []
                for table in named.values():
                    hc, qc = table.get(f, (math.nan, "missing"))
                    cells += ["" if math.isnan(hc) else f"{hc:.2f}", qc]
                w.writerow([f, *cells])


if __name__ == "__main__":
    main()
