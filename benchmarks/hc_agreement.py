"""How far the fast settings move HC from the float32 full-resolution path, per image.

The issue's tolerance is 0.1 mm per image. ``bench_predict.py`` checks it on the
bundled examples and the validation split; this script checks it on any folder
with a pixel-size CSV, for example the 335 unlabelled HC18 test images:

    .venv/bin/python benchmarks/hc_agreement.py ../shared/data/hc18/test_set \\
        --pixel-size-csv ../shared/data/hc18/test_set_pixel_size.csv
    .venv/bin/python benchmarks/hc_agreement.py ../shared/data/hc18/training_set \\
        --pixel-size-csv ../shared/data/hc18/training_set_pixel_size_and_HC.csv --val-split

The reference is ONNX Runtime float32 (PyTorch float32 without it) with the full
post-processing, no TTA; each variant reuses the same probability maps where it
can. Prints, per variant, the largest HC difference, how many images differ by
more than 0.1 and 0.05 mm, and the 99th percentile.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from fetalhead.geometry.letterbox import Letterbox
from fetalhead.infer.backends import float32_backend, preprocess
from fetalhead.infer.hardware import bf16_supported
from fetalhead.model import Checkpoint
from fetalhead.postprocess import postprocess
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.readers.tables import read_pixel_size_csv


def hc_mm(prob: np.ndarray, lb: Letterbox, method: str, px: float) -> float:
    """HC in mm from one probability map (NaN if no head)."""
    e = postprocess(prob, lb, method)[0]  # type: ignore[arg-type]
    return float("nan") if e is None else e.perimeter * px


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--pixel-size-csv", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument(
        "--val-split", action="store_true", help="only the checkpoint's validation files"
    )
    args = ap.parse_args()

    table = read_pixel_size_csv(args.pixel_size_csv)
    files = sorted(p for p in args.folder.glob("*.png") if p.name in table.pixel_size_mm)
    if args.val_split:
        val = set(Checkpoint.load(args.weights).meta.get("split", {}).get("val_files", []))
        files = [p for p in files if p.name in val]
    ref = HeadMeasurer.from_pretrained(args.weights, backend=float32_backend(), tta=False)
    fast = (
        HeadMeasurer.from_pretrained(args.weights, backend="torch-bf16", tta=False)
        if bf16_supported()
        else None
    )
    names = [f"{ref.backend_name}, lowres post"]
    if fast is not None:
        names += [f"{fast.backend_name}, full post", f"{fast.backend_name}, lowres post"]
    diffs: dict[str, list[float]] = {n: [] for n in names}
    it = iter(files)
    while chunk := list(itertools.islice(it, 8)):
        prepared = [preprocess(read_gray(p), ref.config) for p in chunk]
        batch = np.stack([x for x, _ in prepared])[:, None]
        maps = {"ref": ref._probabilities(batch)}
        if fast is not None:
            maps["fast"] = fast._probabilities(batch)
        for i, (p, (_, lb)) in enumerate(zip(chunk, prepared, strict=True)):
            px = table.pixel_size_mm[p.name]
            base = hc_mm(maps["ref"][i], lb, "full", px)
            diffs[names[0]].append(abs(hc_mm(maps["ref"][i], lb, "lowres", px) - base))
            if fast is not None:
                diffs[names[1]].append(abs(hc_mm(maps["fast"][i], lb, "full", px) - base))
                diffs[names[2]].append(abs(hc_mm(maps["fast"][i], lb, "lowres", px) - base))

    print(f"# hc_agreement: {len(files)} images of {args.folder}; reference {ref.backend_name}")
    print("| variant | max abs ΔHC (mm) | images > 0.1 mm | images > 0.05 mm | p99 (mm) |")
    print("|---|---|---|---|---|")
    for name, d in diffs.items():
        a = np.asarray(d)
        print(
            f"| {name} | {np.nanmax(a):.3f} | {int((a > 0.1).sum())} | {int((a > 0.05).sum())} "
            f"| {np.nanpercentile(a, 99):.3f} |"
        )


if __name__ == "__main__":
    main()
