"""What the CPU can do: bfloat16 support, read once and shared by training and inference."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch


def bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU (AVX-512 cores).

    They are fast where the CPU has AVX512-BF16 or AMX; on older AVX-512 cores
    oneDNN emulates them and bfloat16 may be no faster than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@cache
def native_bf16() -> bool:
    """Whether the CPU has bfloat16 arithmetic (AVX512-BF16 or AMX; read from Linux's flags).

    There bfloat16 inference and training are the fastest; on other CPUs oneDNN may
    emulate bfloat16 and be slower than float32.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and bf16_supported()
