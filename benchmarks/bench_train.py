"""Training-throughput benchmark: images/s per setting, as ratios to the plain baseline.

Usage::

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--batch 8] [--size 192x288] \
        [--no-bf16]

Times forward + backward + AdamW steps of the default Res-U-Net on random
inputs, in float32 and under bfloat16 autocast (``fetalhead train``'s default on
CPUs with native bfloat16) (the data pipeline is cached in memory during real training, so the
network dominates).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fetalhead.infer.hardware import native_bf16
from fetalhead.model import ModelConfig, ResUNet, parse_hw
from fetalhead.training.losses import compute_loss


def bench(
    channels_last: bool, steps: int, batch: int, hw: tuple[int, int], bf16: bool = False
) -> float:
    torch.manual_seed(0)
    model = ResUNet(ModelConfig(input_hw=hw)).train()
    x = torch.rand(batch, 1, *hw)
    y = (torch.rand(batch, 1, *hw) > 0.5).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        # As fetalhead.training does: autocast the network, the loss in float32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = compute_loss(logits.float(), y, "dice_bce")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="192x288")
    ap.add_argument(
        "--no-bf16",
        action="store_true",
        help="leave out the bfloat16 rows (slow where the CPU emulates bfloat16)",
    )
    args = ap.parse_args()
    h, w = parse_hw(args.size)
    native = native_bf16()
    print(
        f"# bench_train: Res-U-Net 16 filters at {h}x{w}, batch {args.batch}, {args.steps} steps; "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"native bfloat16 (AVX512-BF16 or AMX): {'yes' if native else 'no'}, so "
        f"`precision: auto` trains in {'bfloat16' if native else 'float32'}"
    )
    rows = [
        (
            "eager fp32 NCHW (baseline; default without native bf16)",
            bench(False, args.steps, args.batch, (h, w)),
        ),
        ("eager fp32 channels_last", bench(True, args.steps, args.batch, (h, w))),
        (
            "eager fp32 NCHW at 224x224 (reference size)",
            bench(False, args.steps, args.batch, (224, 224)),
        ),
    ]
    if not args.no_bf16:
        rows += [
            ("bf16 autocast NCHW", bench(False, args.steps, args.batch, (h, w), bf16=True)),
            (
                "bf16 autocast channels_last (default with native bf16)",
                bench(True, args.steps, args.batch, (h, w), bf16=True),
            ),
        ]
    base = rows[0][1]
    print(f"| {'setting':<54} | img/s | s/img | ratio |")
    print(f"|{'-' * 56}|-------|-------|-------|")
    for name, ips in rows:
        print(f"| {name:<54} | {ips:5.2f} | {1 / ips:5.2f} | {ips / base:5.2f} |")


if __name__ == "__main__":
    main()
