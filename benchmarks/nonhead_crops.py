"""Real ultrasound with no head in it: does the shipped pipeline report a number?

The other non-head benchmarks use generated images. This one cuts the content from
real scans: from each HC18 image, the widest box of the 800 / 540 aspect that keeps
clear of the head's ellipse grown 1.2 times (``fetalhead.geometry.crop.headless_box``:
maternal tissue, placenta, the foetal trunk and limbs, fluid), zoomed to 800 pixels wide
with its pixel size divided by the zoom, as a sonographer's zoom would show it. Each
crop is measured with the shipped weights and defaults (as ``fetalhead predict``) and
counted as in ``benchmarks/nonhead_scans.py``: no region found, region rejected by the
envelope of heads (both ``no_head_found``, no numbers), or numbers with or without the
``uncertain_hc`` flag.

Where the head is comes from the expert outline (``--head reference``: the training
set, whose images the shipped weights were trained on, though never on these crops
alone) or from the shipped pipeline's own ellipse on the whole image (``--head
predicted``: the test set, which no weights here have seen; an image where it finds no
head gives no crop).

With ``--without-hc-floor`` the envelope's gate on HC in mm is left out: the crops'
HCs measured so are what ``scripts/fit_hc_floor.py`` fits that gate on.

Usage (the rows committed in ``benchmarks/results/nonhead_crops``; without the gate
first, then with it)::

    python benchmarks/nonhead_crops.py ../shared/data/hc18/training_set \\
        --pixel-size-csv ../shared/data/hc18/training_set_pixel_size_and_HC.csv \\
        --head reference --without-hc-floor \\
        --out benchmarks/results/nonhead_crops/training_set_before_floor.csv
    python benchmarks/nonhead_crops.py ../shared/data/hc18/test_set \\
        --pixel-size-csv ../shared/data/hc18/test_set_pixel_size.csv \\
        --head predicted --out benchmarks/results/nonhead_crops/test_set.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from cv_report import held_out_cases
from nonhead_scans import OUTCOMES, outcome_of

from fetalhead.data import find_cases, label_ellipse
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.readers.tables import read_pixel_size_csv
from nonhead_corpus import headless_crop

HeadSource = Literal["reference", "predicted"]
FIELDS = ("filename", "box", "crop_pixel_mm", "outcome", "hc_mm", "qc", "head_score")


def heads(
    folder: Path,
    pixel_csv: Path,
    source: HeadSource,
    m: HeadMeasurer,
    held_out_of: Path | None = None,
) -> Iterator[tuple[str, NDArray[np.uint8], float, Ellipse | None]]:
    """``(file name, image, pixel size, head ellipse)`` of each image, the ellipse from
    ``source``; each image is read once.

    With ``held_out_of`` (a fold's run folder; reference ellipses only), only the images
    that fold held out.
    """
    if source == "reference":
        cases = (
            held_out_cases(held_out_of, folder)[1] if held_out_of else find_cases(folder, pixel_csv)
        )
        for c in cases:
            yield c.image.name, read_gray(c.image), c.pixel_size_mm, label_ellipse(c)
        return
    if held_out_of:
        raise SystemExit("--held-out-of needs --head reference")
    table = read_pixel_size_csv(pixel_csv)
    for path in sorted(folder.glob("*.png")):
        px, image = table.lookup(path.name), read_gray(path)
        yield path.name, image, px, m.measure(image, px, filename=path.name).ellipse


def crop_rows(
    items: Iterable[tuple[str, NDArray[np.uint8], float, Ellipse | None]], m: HeadMeasurer
) -> list[dict]:
    """One row per image: the crop's box and what the shipped pipeline made of it."""
    rows = []
    for name, image, px, head in items:
        crop = headless_crop(image, head, px) if head is not None else None
        if crop is None:
            why = "no head on the whole image" if head is None else "no box clear of the head"
            rows.append({"filename": name, "outcome": f"no crop ({why})"})
            continue
        pixels, crop_px, box = crop
        r = m.measure(pixels, crop_px, filename=name)
        rows.append(
            {
                "filename": name,
                "box": " ".join(map(str, box)),
                "crop_pixel_mm": round(crop_px, 5),
                "outcome": outcome_of(r),
                "hc_mm": None if r.hc_mm is None else round(r.hc_mm, 2),
                "qc": r.qc,
                "head_score": None if r.head_score is None else round(r.head_score, 3),
            }
        )
    return rows


def table(rows: list[dict], label: str) -> str:
    """Markdown: how many crops ended in each outcome."""
    counts = Counter(r["outcome"] for r in rows)
    cropped = sum(counts[o] for o in OUTCOMES)
    lines = [
        f"| images | crops | {' | '.join(OUTCOMES)} |",
        f"|---|---|{'---|' * len(OUTCOMES)}",
        f"| {len(rows)} ({label}) | {cropped} | {' | '.join(str(counts[o]) for o in OUTCOMES)} |",
    ]
    numbers = [r for r in rows if r.get("hc_mm") is not None]
    if numbers:
        lines.append("\nCrops given numbers (file, HC mm, qc):\n")
        lines += [f"- {r['filename']}: {r['hc_mm']} mm, `{r['qc']}`" for r in numbers]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--pixel-size-csv", type=Path, required=True)
    ap.add_argument("--head", choices=("reference", "predicted"), required=True)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--out", type=Path, help="per-crop CSV to write")
    ap.add_argument(
        "--held-out-of",
        type=Path,
        metavar="FOLD_RUN",
        help="only the images this fold's run (runs/NAME/foldK) held out; with --weights "
        "its final.pt, a fold model on images it never saw",
    )
    ap.add_argument(
        "--without-hc-floor",
        action="store_true",
        help="leave out the envelope's gate on HC in mm (to measure what it is fitted on)",
    )
    args = ap.parse_args()
    m = HeadMeasurer.from_pretrained(args.weights)
    if args.without_hc_floor and m.rejector is not None:
        m.rejector = replace(m.rejector, hc_floor=None)
    items = heads(args.folder, args.pixel_size_csv, args.head, m, args.held_out_of)
    rows = crop_rows(items, m)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k) for k in FIELDS} for r in rows)
    print(
        f"# nonhead_crops: {args.folder} (head from the {args.head} ellipse), "
        f"{args.weights.name}, {m.backend.name}, TTA {'on' if m.tta else 'off'}, "
        f"HC floor {'off' if args.without_hc_floor else 'on'}\n"
    )
    print(table(rows, args.folder.name))


if __name__ == "__main__":
    main()
