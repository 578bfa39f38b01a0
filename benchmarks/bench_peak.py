"""This CPU's compute bound: GFLOP/s of large matrix products and of single convolutions.

Usage: ``.venv/bin/python benchmarks/bench_peak.py``

Gives the ceiling that ``bench_predict.py``'s "model GFLOP/s" column is read
against: float32 and bfloat16, with all of torch's threads, channels_last
convolutions of the shapes of the Res-U-Net's levels (batch 8, 192x288 input).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch


def seconds(fn: Callable[[], object], repeats: int = 10) -> float:
    """Mean wall time of ``fn`` after two warm-up calls."""
    fn()
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    print(f"# bench_peak: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print("| operation | float32 GFLOP/s | bfloat16 GFLOP/s |")
    print("|---|---|---|")
    n = 2048
    row = []
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
        row.append(2 * n**3 / seconds(lambda a=a, b=b: a @ b) / 1e9)
    print(f"| matrix product {n}x{n} | {row[0]:.0f} | {row[1]:.0f} |")
    for c, h, w in ((16, 192, 288), (32, 96, 144), (64, 48, 72), (128, 24, 36)):
        row = []
        for dt in (torch.float32, torch.bfloat16):
            x = torch.randn(8, c, h, w).to(dt).contiguous(memory_format=torch.channels_last)
            conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dt)
            conv = conv.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                s = seconds(lambda x=x, conv=conv: conv(x))
            row.append(2 * 8 * c * c * 9 * h * w / s / 1e9)
        print(f"| conv 3x3 {c}->{c} at {h}x{w}, batch 8 | {row[0]:.0f} | {row[1]:.0f} |")


if __name__ == "__main__":
    main()
