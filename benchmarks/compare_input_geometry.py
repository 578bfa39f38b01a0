"""Side-by-side accuracy and cost of trained checkpoints on one validation split.

Made to compare the network input geometry (for example the reference's 224x224
squashed input against the 192x288 letterboxed default) and test-time flip
averaging, with everything else in the recipe equal. Training itself is too slow
for a benchmark script (about an hour per run on 2 CPU cores), so the runs are
trained first with ``fetalhead train`` and passed in here.

Usage (from the repository root, after ``bash scripts/setup.sh``):

    .venv/bin/python benchmarks/compare_input_geometry.py \\
        --data ../shared/data/hc18/training_set --tta \\
        letterbox-192x288=runs/hc18_resunet16/best.pt \\
        squashed-224x224=runs/hc18_resunet16_224sq/best.pt

Each checkpoint is evaluated with ``fetalhead.evaluate`` (ellipse-based HC18
metrics) on its recorded validation files; all checkpoints must record the same
files. Training time is the sum of ``log.csv`` beside the checkpoint (and of the
run it was fine-tuned from). Full
per-image results go to ``--out``/LABEL.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fetalhead.evaluate import evaluate
from fetalhead.infer.backends import float32_backend
from fetalhead.model import Checkpoint, count_parameters
from fetalhead.predict import HeadMeasurer


def training_minutes(weights: Path) -> float:
    """Wall time of the run that wrote ``weights`` (``log.csv`` beside it), plus that of
    the run it was fine-tuned from, if any."""
    log = weights.parent / "log.csv"
    if not log.exists():
        return float("nan")
    with log.open() as fh:
        minutes = sum(float(r["seconds"]) for r in csv.DictReader(fh)) / 60
    start = Checkpoint.load(weights).meta.get("recipe", {}).get("init_weights")
    return minutes + training_minutes(Path(start)) if start else minutes


def gflop_per_image(ckpt: Checkpoint) -> float:
    model = ckpt.build()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, *ckpt.config.input_hw))
    return counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=CHECKPOINT pairs")
    ap.add_argument("--data", type=Path, required=True, help="labelled folder (HC18 layout)")
    ap.add_argument("--out", type=Path, default=Path("runs/compare_input_geometry"))
    ap.add_argument("--tta", action="store_true", help="also evaluate with flip averaging")
    args = ap.parse_args()

    pairs = []
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=CHECKPOINT")
        pairs.append((label, Path(path)))
    splits = {
        label: sorted(Checkpoint.load(p).meta.get("split", {}).get("val_files", []))
        for label, p in pairs
    }
    first = next(iter(splits.values()))
    if not first or any(s != first for s in splits.values()):
        raise SystemExit("the checkpoints do not record one common validation split")

    header = (
        "| run | input | aspect | params | GFLOP/img | train min | TTA | DSC % | HD mm "
        "| DF mm | ADF mm (SD, p95) | ADF 1st / 2nd / 3rd trimester |"
    )
    lines = [header, "|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|"]
    for label, path in pairs:
        ckpt = Checkpoint.load(path)
        cfg = ckpt.config
        for tta in (False, True) if args.tta else (False,):
            measurer = HeadMeasurer.from_pretrained(path, tta=tta, backend=float32_backend())
            name = f"{label}{'-tta' if tta else ''}"
            s = evaluate(measurer, args.data, args.out / name, split="val", progress=False)
            tri = " / ".join(
                f"{s['adf_by_trimester'][t]['mean']:.2f}" for t in ("first", "second", "third")
            )
            lines.append(
                f"| {label} | {cfg.input_hw[0]}x{cfg.input_hw[1]} "
                f"| {'letterboxed' if cfg.keep_aspect else 'squashed'} "
                f"| {count_parameters(ckpt.build()) / 1e6:.2f} M | {gflop_per_image(ckpt):.2f} "
                f"| {training_minutes(path):.0f} | {'yes' if tta else 'no'} "
                f"| {100 * s['dsc']['mean']:.2f} | {s['hd_mm']['mean']:.2f} "
                f"| {s['df_mm']['mean']:+.2f} "
                f"| {s['adf_mm']['mean']:.2f} ({s['adf_mm']['sd']:.2f}, {s['adf_mm']['p95']:.2f}) "
                f"| {tri} |"
            )
    print(
        f"# compare_input_geometry: {len(first)} validation images of {args.data}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
