"""The worst held-out measurements of a cross-validation run, drawn on their images.

For each fold of a ``scripts/cross_validate.py`` run, the held-out maps are measured as
``fetalhead predict`` does (:func:`fetalhead.predict.fit_by_band`) with the shipped
boundary levels by HC band (P = 0.55, or 0.6 where that HC is a third-trimester one;
``--levels`` to change them: the committed gallery was drawn at the levels of its day,
0.55 / 0.55 / 0.65). The ``--n`` images with the largest |HC error| are drawn in
a grid: the reference ellipse in green, the map's boundary in yellow and the ellipse
fitted to it in red, each titled with its name, reference HC and error. HC18 images (van
den Heuvel et al. 2018, CC BY 4.0).

    python benchmarks/failure_gallery.py ../shared/data/hc18/training_set --run runs/cv5_ema \
        --out docs/heldout_failures.jpg --levels 0.55 0.55 0.65
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
from cv_report import held_out_maps, parse_run_arguments
from numpy.typing import NDArray

from fetalhead.data import Case, label_ellipse
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.predict import fit_by_band
from fetalhead.readers import read_gray

GREEN, YELLOW, RED = (0, 200, 0), (0, 220, 255), (0, 0, 255)  # BGR
TILE_W = 360


def _draw_ellipse(img: NDArray[np.uint8], e: Ellipse, colour: tuple[int, int, int]) -> None:
    cv2.ellipse(
        img, ((e.cx, e.cy), (2 * e.a, 2 * e.b), math.degrees(e.angle)), colour, 2, cv2.LINE_AA
    )


def tile(case: Case, e: Ellipse, contour: NDArray[np.float64], df_mm: float) -> NDArray[np.uint8]:
    """One image with its three curves and a title, scaled to :data:`TILE_W` wide."""
    img = cv2.cvtColor(read_gray(case.image), cv2.COLOR_GRAY2BGR)
    cv2.polylines(img, [np.round(contour).astype(np.int32)], True, YELLOW, 1, cv2.LINE_AA)
    _draw_ellipse(img, label_ellipse(case), GREEN)
    _draw_ellipse(img, e, RED)
    h, w = img.shape[:2]
    img = cv2.resize(img, (TILE_W, round(h * TILE_W / w)), interpolation=cv2.INTER_AREA)
    title = f"{case.image.name}  ref {case.hc_mm:.0f} mm  error {df_mm:+.1f} mm"
    cv2.putText(img, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return img


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--columns", type=int, default=3)


def main() -> None:
    args, levels = parse_run_arguments(__doc__.splitlines()[0], options)
    found = []
    for _, case, prob, lb in held_out_maps(args.data, args.run):
        e, contour, _, _ = fit_by_band(prob, lb, "full", levels, 0.6, case.pixel_size_mm)
        if e is not None and contour is not None and case.hc_mm is not None:
            found.append((e.perimeter * case.pixel_size_mm - case.hc_mm, case, e, contour))
    found.sort(key=lambda t: -abs(t[0]))
    worst = found[: args.n]
    tiles = [tile(case, e, contour, df) for df, case, e, contour in worst]
    drawn = len(tiles)
    small = {
        c.image.name for _, c, _, _ in worst if trimester(hadlock_1984(c.hc_mm).weeks) == "first"
    }
    rest = [abs(df) for df, c, _, _ in found if c.image.name not in small]
    tile_h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, tile_h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % args.columns)
    rows = [np.hstack(tiles[i : i + args.columns]) for i in range(0, len(tiles), args.columns)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"{len(found)} held-out images measured; the {drawn} worst drawn in {args.out}")
    adf = float(np.mean([abs(t[0]) for t in found]))
    print(
        f"ADF {adf:.2f} mm; {len(small)} of the drawn are first-trimester heads (by the "
        f"reference HC), without which the {len(rest)} others score {np.mean(rest):.2f} mm"
    )


if __name__ == "__main__":
    main()
