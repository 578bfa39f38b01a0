"""End-to-end prediction benchmark: backends and settings side by side, in one run.

Usage (from the repository root, after ``bash scripts/setup.sh``):

    .venv/bin/python benchmarks/bench_predict.py                 # shipped weights, examples/
    .venv/bin/python benchmarks/bench_predict.py --images ../shared/data/hc18/test_set --n 200

Prints images/s and per-stage time (decode, preprocess, model, post-process: all that
``predict`` does after the network; the table of 2026-11-24 in ``benchmarks/README.md``
timed the ellipse fit alone, at P = 0.5) for each variant, its speed-up over the
PyTorch eager fp32 batch-1 baseline, the largest HC difference from that baseline, the
model's FLOPs per image and the achieved GFLOP/s, and the peak memory of ``fetalhead
predict`` (with its worker processes) on a 1,000-image folder. ``--repeats R`` runs all variants R
times in turn and reports medians, since a shared machine's speed drifts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fetalhead.batch import prefetch
from fetalhead.infer.backends import TorchBackend, preprocess
from fetalhead.infer.hardware import bf16_supported
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray


@dataclass
class Variant:
    name: str
    backend: str
    batch: int
    channels_last: bool
    post: str
    threaded_decode: bool
    compile: bool = False
    tta: bool = False
    processes: int = 1
    shape_prior: bool = True

    @property
    def exact(self) -> bool:
        """Whether the variant computes the same float32 map as the baseline."""
        return self.post == "full" and self.backend in ("torch", "onnx") and not self.tta


VARIANTS = [
    Variant("torch eager fp32, batch 1 (baseline)", "torch", 1, False, "full", False),
    Variant("torch fp32, batch 8, channels_last", "torch", 8, True, "full", True),
    Variant("torch fp32, batch 8, 2 processes", "torch", 8, True, "full", False, processes=2),
    Variant("onnxruntime fp32, batch 1", "onnx", 1, False, "full", True),
    Variant("onnxruntime fp32, batch 8", "onnx", 8, False, "full", True),
    Variant("onnxruntime fp32, batch 8, 2 processes", "onnx", 8, False, "full", False, processes=2),
    Variant("onnxruntime fp32, batch 8, flip TTA", "onnx", 8, False, "full", True, tta=True),
    Variant("onnxruntime fp32, batch 8, lowres post", "onnx", 8, False, "lowres", True),
    Variant("onnxruntime int8 (static QDQ), batch 8", "onnx-int8", 8, False, "full", True),
    Variant("torch fp32 compiled, batch 8, NHWC", "torch", 8, True, "full", True, True),
    Variant("torch bf16, batch 8", "torch-bf16", 8, True, "full", True),
    Variant("torch bf16 compiled, batch 8", "torch-bf16", 8, True, "full", True, True),
    Variant("torch bf16, batch 8, 2 processes", "torch-bf16", 8, True, "full", False, processes=2),
    # The shape prior's cost: the same row with the measurer's prior turned off.
    Variant(
        "torch bf16, batch 8, 2 processes, no shape prior",
        "torch-bf16",
        8,
        True,
        "full",
        False,
        processes=2,
        shape_prior=False,
    ),
    Variant(
        "torch bf16, batch 8, 2 processes, lowres post",
        "torch-bf16",
        8,
        True,
        "lowres",
        False,
        processes=2,
    ),
    Variant(
        "torch bf16 compiled, batch 8, 2 processes",
        "torch-bf16",
        8,
        True,
        "full",
        False,
        compile=True,
        processes=2,
    ),
]


def build_measurer(v: Variant, weights: Path, calibration: list[Path]) -> HeadMeasurer:
    """The measurer of one variant (int8: quantised with ``calibration`` images)."""
    backend = "onnx" if v.backend == "onnx-int8" else v.backend
    m = HeadMeasurer.from_pretrained(
        weights,
        backend=backend,  # type: ignore[arg-type]
        postprocess=v.post,  # type: ignore[arg-type]
        tta=v.tta,
        compile=v.compile,
        shape_prior=v.shape_prior,
    )
    if v.backend == "torch" and not v.channels_last:
        m.backend = TorchBackend(m.checkpoint, channels_last=False, compile=v.compile)
    elif v.backend == "onnx-int8":
        from fetalhead.infer.onnx import OnnxBackend, export_onnx_bytes, quantize_int8

        inputs = [preprocess(read_gray(p), m.config)[0][None, None] for p in calibration]
        m.backend = OnnxBackend(quantize_int8(export_onnx_bytes(m.checkpoint), inputs))
    return m


def run_variant(
    v: Variant, weights: Path, files: list[Path], px: float, calibration: list[Path]
) -> tuple[dict[str, float], list[float]]:
    if v.processes > 1:
        return run_processes(v, weights, files, px, calibration)
    m = build_measurer(v, weights, calibration)
    cfg = m.config
    # warm-up (and, for compiled variants, compilation: reported, not timed)
    x, _ = preprocess(read_gray(files[0]), cfg)
    t = time.perf_counter()
    m._probabilities(np.stack([x] * v.batch)[:, None])
    warmup = time.perf_counter() - t
    stages = dict.fromkeys(("decode", "preprocess", "model", "post"), 0.0)
    hcs: list[float] = []

    def decode(p: Path) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        img = read_gray(p)
        return img, time.perf_counter() - t

    t0 = time.perf_counter()
    decoded = (
        prefetch(files, decode, workers=2, ahead=2 * v.batch)
        if v.threaded_decode
        else map(decode, files)
    )
    it = iter(decoded)
    while chunk := list(itertools.islice(it, v.batch)):
        stages["decode"] += sum(dt for _, dt in chunk)
        t = time.perf_counter()
        prepared = [preprocess(img, cfg) for img, _ in chunk]
        batch = np.stack([p[0] for p in prepared])[:, None]
        stages["preprocess"] += time.perf_counter() - t
        t = time.perf_counter()
        probs = m._probabilities(batch)
        stages["model"] += time.perf_counter() - t
        t = time.perf_counter()
        for (img, _), prob, (_, lb) in zip(chunk, probs, prepared, strict=True):
            # What predict does after the network: the fit at the HC band's level, the
            # non-head check, the interval, the flag, the shape prior and the HC gate.
            r = m._hc_gate(m._finish(img, prob, lb, px, "bench"))
            hcs.append(float("nan") if r.hc_mm is None else r.hc_mm)
        stages["post"] += time.perf_counter() - t
    total = time.perf_counter() - t0
    n = len(files)
    stats = {k: 1000 * s / n for k, s in stages.items()}
    return {"total": total, "ips": n / total, "warmup": warmup, **stats}, hcs


def run_processes(
    v: Variant, weights: Path, files: list[Path], px: float, calibration: list[Path]
) -> tuple[dict[str, float], list[float]]:
    """Time ``run_batch`` with a warm pool of worker processes (stages are not separable)."""
    from fetalhead.batch import BatchOptions, InputFile, MeasuringPool, PixelSizes, run_batch

    m = build_measurer(v, weights, calibration)
    sizes = PixelSizes(value_mm=px)
    with tempfile.TemporaryDirectory() as d, MeasuringPool(m, v.processes) as pool:
        t = time.perf_counter()
        # warm-up: every worker starts (imports torch, loads the model) and runs a batch
        warm = [InputFile(files[0], f"warm{i}.png") for i in range(v.batch * v.processes)]
        opts = BatchOptions(Path(d) / "warm", batch_size=v.batch, progress=False)
        run_batch(m, warm, sizes, opts, pool=pool)
        warmup = time.perf_counter() - t
        inputs = [InputFile(p, f"{i:05d}_{p.name}") for i, p in enumerate(files)]
        opts = BatchOptions(Path(d) / "out", batch_size=v.batch, progress=False)
        t = time.perf_counter()
        summary = run_batch(m, inputs, sizes, opts, pool=pool)
        total = time.perf_counter() - t
    hcs = [float("nan") if r["hc_mm"] is None else float(r["hc_mm"]) for r in summary.rows]
    nan = float("nan")
    stages = {"decode": nan, "preprocess": nan, "model": nan, "post": nan}
    return {"total": total, "ips": len(files) / total, "warmup": warmup, **stages}, hcs


def validation_accuracy(
    variants: list[Variant], weights: Path, data: Path, calibration: list[Path]
) -> None:
    """Print each variant's ADF and DSC on the checkpoint's validation split."""
    from fetalhead.data import find_cases
    from fetalhead.evaluate import evaluate_case

    cases = [c for c in find_cases(data) if c.image.name in validation_files(weights)]
    rows = []
    for v in variants:
        m = build_measurer(v, weights, calibration)
        metrics = []
        for c in cases:
            img = read_gray(c.image)
            metrics.append(evaluate_case(c, m.measure(img, c.pixel_size_mm), img.shape))
        hc = np.array([np.nan if r.hc_pred_mm is None else r.hc_pred_mm for r in metrics])
        adf = float(np.nanmean([np.nan if r.adf_mm is None else r.adf_mm for r in metrics]))
        rows.append((v, adf, 100 * float(np.mean([r.dsc for r in metrics])), hc))
    _, ref_adf, ref_dsc, ref_hc = rows[0]
    print(f"\n# accuracy on the checkpoint's validation split: {len(cases)} images of {data}")
    header = (
        f"| {'variant':<46} | ADF mm | ΔADF mm | DSC % | ΔDSC pp "
        f"| max abs ΔHC (mm) | images with abs ΔHC > 0.1 mm |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for v, adf, dsc, hc in rows:
        d = np.abs(hc - ref_hc)
        print(
            f"| {v.name:<46} | {adf:6.3f} | {adf - ref_adf:+7.3f} | {dsc:5.2f} "
            f"| {dsc - ref_dsc:+7.2f} | {np.nanmax(d):16.3f} | {int((d > 0.1).sum()):28d} |"
        )


def validation_files(weights: Path) -> set[str]:
    from fetalhead.model import Checkpoint

    return set(Checkpoint.load(weights).meta.get("split", {}).get("val_files", []))


def model_flops(weights: Path) -> float:
    m = HeadMeasurer.from_pretrained(weights, backend="torch")
    h, w = m.config.input_hw
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        m.backend.model(torch.zeros(1, 1, h, w))
    return float(counter.get_total_flops())


def _tree_memory_kb(root: int) -> tuple[int, int]:
    """Summed RSS and PSS (kB) of a process and its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    rss = pss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    kb = int(value.split()[0])
                    rss, pss = (rss + kb, pss) if key == "Rss" else (rss, pss + kb)
        except (OSError, ValueError):
            continue
    return rss, pss


def peak_memory_mb(
    weights: Path, source: list[Path], n: int, backend: str
) -> tuple[float, float, int, str]:
    """Peak summed RSS and PSS (MB), processes and backend of ``fetalhead predict`` on n images.

    Sampled every 50 ms from /proc, so a peak shorter than that can be missed; PSS
    shares pages that several processes map (the libraries) out among them.
    """
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "images"
        folder.mkdir()
        for i in range(n):
            src = source[i % len(source)]
            try:
                os.link(src, folder / f"{i:05d}_HC.png")
            except OSError:
                (folder / f"{i:05d}_HC.png").write_bytes(src.read_bytes())
        out = Path(d) / "out"
        cmd = [
            sys.executable, "-m", "fetalhead.cli", "predict", str(folder), "--out", str(out),
            "--pixel-size", "0.1", "--weights", str(weights), "--backend", backend,
            "--no-progress", "--quiet",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak_rss = peak_pss = 0
        while proc.poll() is None:
            rss, pss = _tree_memory_kb(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.05)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
        run = json.loads((out / "run.json").read_text())
        mb = peak_rss / 1024, peak_pss / 1024
        return *mb, run["options"]["processes"], run["model"]["backend"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--images", type=Path, default=Path("examples"))
    ap.add_argument("--n", type=int, default=96, help="images per variant (repeats the folder)")
    ap.add_argument(
        "--repeats", type=int, default=1, help="rounds over all variants (median reported)"
    )
    ap.add_argument("--memory-n", type=int, default=1000, help="folder size for peak RSS (0: skip)")
    ap.add_argument("--pixel-size", type=float, default=0.1)
    ap.add_argument(
        "--val-data",
        type=Path,
        help="labelled folder (e.g. ../shared/data/hc18/training_set): report the ADF and DSC "
        "of the variants that change results on the checkpoint's validation split, and "
        "calibrate int8 on 32 of its training images instead of the benchmark images",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        help="run only the variants whose name is one of these or, for a single text, "
        "contains it (and the baseline)",
    )
    args = ap.parse_args()

    source = sorted(p for p in args.images.glob("*.png") if not p.name.endswith("_Annotation.png"))
    files = [source[i % len(source)] for i in range(args.n)]
    print(f"# bench_predict: {len(files)} images from {args.images}, weights {args.weights}")
    print(
        f"# {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d')}"
    )
    flops = model_flops(args.weights)
    print(f"# model: {flops / 1e9:.2f} GFLOP per image (FLOPs counted by torch, 2 per MAC)\n")

    calibration = files[:16]
    if args.val_data:
        from fetalhead.data import find_cases

        val = validation_files(args.weights)
        pool = [c.image for c in find_cases(args.val_data) if c.image.name not in val]
        calibration = pool[:: max(1, len(pool) // 32)][:32]

    def wanted(v: Variant) -> bool:
        if v is VARIANTS[0] or not args.only:
            return True
        return v.name in args.only or (len(args.only) == 1 and args.only[0] in v.name)

    variants = [v for v in VARIANTS if wanted(v)]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        variants = [v for v in variants if not v.backend.startswith("onnx")]
        print("# onnxruntime not installed: ONNX rows skipped (pip install 'fetalhead[onnx]')")
    if not bf16_supported():
        variants = [v for v in variants if v.backend != "torch-bf16"]
        print("# oneDNN has no bfloat16 on this CPU: bf16 rows skipped")
    # Rounds over all variants: this shared machine's speed drifts by 10-20 % over
    # minutes, so each round's ratios compare runs close in time, and the table shows
    # the median over rounds with the range of the per-round speed-ups.
    runs: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    hcs_of: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        if args.repeats > 1:
            print(f"# round {r + 1} of {args.repeats}", file=sys.stderr, flush=True)
        for v in variants:
            stats, hcs = run_variant(v, args.weights, files, args.pixel_size, calibration)
            runs[v.name].append(stats)
            hcs_of.setdefault(v.name, np.asarray(hcs))
    base = variants[0].name
    header = (
        f"| {'variant':<46} | img/s | speed-up | range | decode ms | preprocess ms "
        f"| model ms | post ms | model GFLOP/s | max abs ΔHC vs baseline (mm) |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")

    def num(x: float, width: int) -> str:
        return f"{x:{width}.1f}" if np.isfinite(x) else f"{'-':>{width}}"

    for v in variants:
        rounds = runs[v.name]
        med = {k: float(np.median([st[k] for st in rounds])) for k in rounds[0]}
        ratios = [st["ips"] / b["ips"] for st, b in zip(rounds, runs[base], strict=True)]
        hc, base_hc = hcs_of[v.name], hcs_of[base]
        both = np.isfinite(hc) & np.isfinite(base_hc)
        dhc = float(np.max(np.abs(hc[both] - base_hc[both]))) if both.any() else float("nan")
        gflops = flops / (med["model"] / 1000) / 1e9
        print(
            f"| {v.name:<46} | {med['ips']:5.1f} | {np.median(ratios):7.2f}x "
            f"| {min(ratios):.2f}-{max(ratios):.2f} "
            f"| {num(med['decode'], 9)} | {num(med['preprocess'], 13)} "
            f"| {num(med['model'], 8)} | {num(med['post'], 7)} | {num(gflops, 13)} "
            f"| {dhc:28.3f} |"
        )
    print(
        "\nStage times are per image; decode overlaps inference when threaded, so "
        "stages can sum to more than 1000/img/s. Rows with 2 processes time the whole "
        "batch run (decode, inference and post-processing interleave in the workers), "
        "after a warm-up that starts the workers."
    )
    print(
        f"Median of {args.repeats} round(s); speed-up is the median of the per-round ratios "
        "to the baseline, range their minimum and maximum."
    )
    for v in variants:
        if v.compile or v.processes > 1:
            what = "compilation" if v.compile else "worker start"
            warm = max(st["warmup"] for st in runs[v.name])
            print(f"one-off {what} + first batch, {v.name}: up to {warm:.1f} s")
    if args.val_data:
        reference = next(v for v in variants if v.exact)
        # Worker processes compute what the same settings do in one process: one row each.
        changed, seen = [], set()
        for v in variants:
            key = (v.backend, v.post, v.tta, v.compile)
            if not v.exact and key not in seen:
                seen.add(key)
                changed.append(v)
        validation_accuracy([reference, *changed], args.weights, args.val_data, calibration)
    if args.memory_n:
        # The CLI's default backend (torch-bf16 on CPUs with native bfloat16) and ONNX
        # Runtime, with the weights' default settings (TTA for the shipped weights) and
        # the CLI's default number of processes.
        backends = ["auto", "onnx"] if any(v.backend == "onnx" for v in variants) else ["auto"]
        for backend in backends:
            rss, pss, procs, used = peak_memory_mb(args.weights, source, args.memory_n, backend)
            label = f"auto = {used}" if backend == "auto" else backend
            print(
                f"peak memory, fetalhead predict on {args.memory_n} images ({label}, "
                f"{procs} process{'es' if procs > 1 else ''}): PSS {pss:.0f} MB, "
                f"RSS summed over processes {rss:.0f} MB"
            )


if __name__ == "__main__":
    main()
