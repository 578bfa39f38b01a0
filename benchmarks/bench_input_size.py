"""Network cost of the Res-U-Net-16 at the shipped 192x288 input and at finer ones.

Builds the shipped architecture (random weights: the cost does not depend on them) at
each input size and prints, side by side, the FLOPs per image (counted by torch, 2 per
multiply-add) and the network's throughput with each inference backend available here,
batch 8, after a warm-up. Post-processing is not included: it works on the original
image and costs the same at every input size.

Usage::

    python benchmarks/bench_input_size.py --sizes 192x288 224x336 256x384
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fetalhead.infer.backends import make_backend
from fetalhead.infer.hardware import bf16_supported
from fetalhead.model import Checkpoint, ModelConfig, ResUNet, parse_hw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["192x288", "224x336", "256x384"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    backends = ["torch", *(["torch-bf16"] if bf16_supported() else [])]
    print(
        f"# bench_input_size: batch {args.batch}, {args.repeats} timed batches after one "
        f"warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(
        "| input (H x W) | pixels vs 192x288 | GFLOP/img | "
        + " | ".join(f"{b} img/s" for b in backends)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(backends))
    base_pixels = 192 * 288
    for text in args.sizes:
        h, w = parse_hw(text)
        torch.manual_seed(0)
        model = ResUNet(ModelConfig(start_filters=16, dropout=0.5, input_hw=(h, w))).eval()
        ck = Checkpoint.from_model(model)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model(torch.zeros(1, 1, h, w))
        cells = []
        x = np.random.default_rng(0).random((args.batch, 1, h, w), dtype=np.float32)
        for name in backends:
            backend = make_backend(ck, name)  # type: ignore[arg-type]
            backend(x)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                backend(x)
            cells.append(f"{args.batch * args.repeats / (time.perf_counter() - t0):.1f}")
        print(
            f"| {h} x {w} | {h * w / base_pixels:.2f} | {counter.get_total_flops() / 1e9:.2f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
