"""Command-line interface: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from fetalhead import __version__
from fetalhead.image import InputError

#: Inference backends (the same as ``fetalhead.predict.BackendName``, kept here so that
#: ``--help`` does not import torch).
BACKENDS = ("auto", "torch", "torch-bf16", "onnx")
#: Training losses (``fetalhead.training.config.LossName``, kept here for the same reason).
LOSSES = ("dice", "dice_bce", "dice_bce_boundary", "dice_bce_distance", "bce")

logger = logging.getLogger("fetalhead")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Res-U-Net on a labelled folder")
    p.add_argument("data", help="labelled folder (HC18 or NNN_HC_Mask.png layout)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, curves.png)")
    p.add_argument("--config", help="YAML or TOML file with TrainConfig fields")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", help="network input as H or HxW, e.g. 224 or 192x288")
    p.add_argument("--start-filters", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--folds", type=int, help="cross-validation by scan prefix: number of folds")
    p.add_argument("--fold", type=int, help="with --folds: the fold (0-based) to validate on")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help="dice_bce_boundary: cross-entropy weighted 5x within 3 pixels of the outline; "
        "dice_bce_distance: plus each head pixel charged its distance from the outline; "
        "bce: cross-entropy alone",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        help="auto: bfloat16 autocast on CPUs with native bfloat16, else float32",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--max-images", type=int, help="use only the first N cases (smoke runs)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    p.add_argument(
        "--init-weights", metavar="FILE", help="fine-tune from this checkpoint (same split)"
    )
    p.add_argument(
        "--deep-supervision",
        action="store_true",
        help="add losses on the coarser decoder levels (weights 1/2, 1/4, 1/8)",
    )
    p.add_argument(
        "--balance-trimesters",
        action="store_true",
        help="draw images weighted by trimester (rarer trimesters more often)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _cmd_train(args: argparse.Namespace) -> int:
    from fetalhead.model import parse_hw
    from fetalhead.training import TrainConfig, train

    hw: tuple[int | None, int | None] = (None, None)
    if args.image_size:
        try:
            hw = parse_hw(args.image_size)
        except ValueError as exc:
            raise SystemExit(f"--image-size: {exc}") from None
    overrides = {
        "data": args.data,
        "out": args.out,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "loss": args.loss,
        "image_h": hw[0],
        "image_w": hw[1],
        "start_filters": args.start_filters,
        "val_fraction": args.val_fraction,
        "folds": args.folds,
        "fold": args.fold,
        "precision": args.precision,
        "seed": args.seed,
        "max_images": args.max_images,
        "num_threads": args.threads,
        "device": args.device,
        "init_weights": args.init_weights,
        "balance_trimesters": True if args.balance_trimesters else None,
        "deep_supervision": True if args.deep_supervision else None,
        "progress": False if args.no_progress else None,
    }
    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists() and not args.config:
        # Resume with the run's own configuration; explicit options still win.
        cfg = TrainConfig.from_file(saved, **overrides)
    elif args.config:
        cfg = TrainConfig.from_file(args.config, **overrides)
    else:
        cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    result = train(cfg, resume=args.resume)
    if math.isnan(result.best_val_dice):
        print(f"no validation split: the last weights are final.pt; outputs in {result.run_dir}")
    else:
        print(f"best validation Dice {result.best_val_dice:.4f}; outputs in {result.run_dir}")
    return 0


def _add_pass_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="average with a left-right flipped pass (default: as the weights recommend; "
        "off for the shipped weights)",
    )
    p.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        help="measure in two passes, the second on a crop around the head found by the "
        "first (default: as the weights recommend)",
    )
    p.add_argument(
        "--shape-prior",
        action=argparse.BooleanOptionalAction,
        help="draw the head's long axis towards what its short axis predicts for its HC "
        "band (default: as the weights carry; on for the shipped weights)",
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="measure HC, BPD, OFD and GA on images",
        description="Measure the foetal head on PNG, JPEG or DICOM images and write "
        "DIR/predictions.csv (HC18 ellipse parameters in mm, HC, BPD, OFD, GA, qc) and "
        "DIR/run.json.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    px = p.add_mutually_exclusive_group()
    px.add_argument("--pixel-size", type=float, metavar="MM", help="pixel size (mm) for all images")
    px.add_argument(
        "--pixel-size-csv", metavar="CSV", help="CSV with columns filename,pixel size(mm)"
    )
    p.add_argument("--weights", metavar="FILE", help="checkpoint (default: shipped HC18 weights)")
    p.add_argument("--save-masks", action="store_true", help="write DIR/masks/*_mask.png")
    p.add_argument("--overlays", action="store_true", help="write DIR/overlays/*.png")
    _add_pass_options(p)
    p.add_argument("--submission", metavar="CSV", help="also write an HC18 submission CSV")
    p.add_argument(
        "--sr",
        metavar="DIR",
        help="write a DICOM SR (OB-GYN Ultrasound Procedure Report, TID 5000) per measured "
        "DICOM frame into DIR",
    )
    p.add_argument(
        "--interval-level",
        type=float,
        default=0.9,
        choices=[0.8, 0.9, 0.95],
        help="coverage of the calibrated HC interval (hc_low_mm, hc_high_mm; default 0.9)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="skip files whose every frame is in predictions.csv"
    )
    again.add_argument("--overwrite", action="store_true", help="start over in a non-empty DIR")
    p.add_argument(
        "--num-parts",
        type=int,
        default=1,
        metavar="N",
        help="split the inputs into N parts (every N-th file) to share them across machines; "
        "join the parts' folders with 'fetalhead merge'",
    )
    p.add_argument("--part-id", type=int, default=0, metavar="I", help="which part (0..N-1)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference backend (auto: torch-bf16 on CPUs with native bfloat16, else "
        "ONNX Runtime if installed, else PyTorch; torch-bf16: bfloat16 after the first "
        "convolution, within 0.06 mm of float32 on 463 HC18 images, see benchmarks/README.md)",
    )
    p.add_argument(
        "--postprocess",
        choices=["lowres", "full"],
        default="full",
        help="ellipse from the probability map upsampled to full resolution (full, default) "
        "or from the sub-pixel contour of the network-resolution map (lowres, faster)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per network batch")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (one process)")
    p.add_argument(
        "--processes",
        type=int,
        help="worker processes, each decoding, inferring and post-processing whole batches "
        "(default: 2 for the torch backends on 2+ cores and 64+ images, else 1)",
    )
    p.add_argument("--threads", type=int, help="inference CPU threads in all (default: all cores)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch backends: compile the network with torch.compile (4-18 s once per "
        "process here; pays off on large folders)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print the results table")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="HC18 metrics (DSC, HD, DF, ADF) on labelled data",
        description="Run a model on labelled data and score it, or, with --predictions, "
        "score an existing predictions.csv without a model.",
    )
    p.add_argument("data", help="labelled folder with its pixel-size CSV")
    p.add_argument(
        "--predictions",
        metavar="CSV",
        help="score this predictions.csv (from 'fetalhead predict' or 'merge') instead of "
        "running a model; every labelled image is scored",
    )
    p.add_argument("--weights", metavar="FILE", help="checkpoint (default: shipped weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--split",
        choices=["val", "all"],
        default="val",
        help="val: the checkpoint's validation files; all: every labelled image",
    )
    _add_pass_options(p)
    p.add_argument("--postprocess", choices=["lowres", "full"], default="full")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference backend (auto here: float32, ONNX Runtime if installed, else "
        "PyTorch, so that the metrics do not depend on the CPU)",
    )
    p.add_argument("--no-progress", action="store_true")


def _print_table(rows: list[dict]) -> None:
    from fetalhead.gestation import format_weeks_days, format_weeks_days_range

    def f(v: object, spec: str = ".1f") -> str:
        return format(v, spec) if isinstance(v, float) else "-"

    header = f"{'file':<28} {'HC mm':>7} {'BPD mm':>7} {'OFD mm':>7} {'GA':>7} {'GA range':>13}  qc"
    print(header)
    print("-" * len(header))
    for r in rows[:200]:
        name = r["filename"] if r.get("frame") is None else f"{r['filename']}[{r['frame']}]"
        weeks = r.get("ga_weeks_hadlock")
        ga = format_weeks_days(weeks) if isinstance(weeks, float) else "-"
        span = format_weeks_days_range(
            r.get("ga_weeks_hadlock_2sd_low"), r.get("ga_weeks_hadlock_2sd_high")
        )
        print(
            f"{name[-28:]:<28} {f(r['hc_mm']):>7} {f(r['bpd_mm']):>7} {f(r['ofd_mm']):>7} "
            f"{ga:>7} {span:>13}  {r['qc']}"
        )
    if len(rows) > 200:
        print(f"... {len(rows) - 200} more rows in predictions.csv")
    print(
        "GA: Hadlock 1984. GA range: the HC interval widened by the population's "
        "+/-8 % (2 SD) at a given HC; see the README."
    )


def _measurer(args: argparse.Namespace):
    from fetalhead.predict import HeadMeasurer

    return HeadMeasurer.from_pretrained(
        args.weights,
        backend=args.backend,
        tta=args.tta,
        refine=args.refine,
        shape_prior=getattr(args, "shape_prior", None),
        postprocess=args.postprocess,
        threads=getattr(args, "threads", None),
        compile=getattr(args, "compile", False),
        interval_level=getattr(args, "interval_level", 0.9),
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from fetalhead.batch import (
        BatchOptions,
        PixelSizes,
        collect_inputs,
        default_processes,
        run_batch,
        select_part,
    )

    if (
        args.batch_size < 1
        or args.workers < 1
        or (args.processes is not None and args.processes < 1)
    ):
        raise ValueError("--batch-size, --workers and --processes must be at least 1")
    all_inputs = collect_inputs(args.paths)
    inputs = select_part(all_inputs, args.num_parts, args.part_id)
    sizes = PixelSizes.from_options(args.pixel_size, args.pixel_size_csv, all_inputs)
    measurer = _measurer(args)
    processes = args.processes or default_processes(measurer.backend_name, len(inputs))
    opts = BatchOptions(
        out_dir=Path(args.out),
        save_masks=args.save_masks,
        overlays=args.overlays,
        submission=Path(args.submission) if args.submission else None,
        sr_dir=Path(args.sr) if args.sr else None,
        resume=args.resume,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        workers=args.workers,
        processes=processes,
        threads=args.threads,
        progress=not args.no_progress,
        num_parts=args.num_parts,
        part_id=args.part_id,
    )
    summary = run_batch(
        measurer, inputs, sizes, opts, run_options={**vars(args), "processes": processes}
    )
    if not args.quiet:
        _print_table(summary.rows)
    print(
        f"{summary.n_rows} rows: {summary.n_ok} ok, {summary.n_flagged} flagged by qc, "
        f"{summary.n_unreadable} not measured, {summary.n_skipped} skipped (resume) "
        f"-> {summary.predictions_csv}"
    )
    nothing = summary.n_rows > 0 and summary.n_unreadable == summary.n_rows
    return 1 if nothing else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fetalhead.evaluate import evaluate, evaluate_predictions
    from fetalhead.infer.backends import float32_backend

    command = " ".join(["fetalhead", *sys.argv[1:]])
    if args.predictions:
        summary = evaluate_predictions(args.predictions, args.data, args.out, command=command)
        print((Path(args.out) / "summary.md").read_text(encoding="utf-8"))
        return 0 if summary["n_images"] else 1
    if args.backend == "auto":
        args.backend = float32_backend()
    summary = evaluate(
        _measurer(args),
        args.data,
        args.out,
        split=args.split,
        progress=not args.no_progress,
        command=command,
    )
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"))
    return 0 if summary["n_images"] else 1


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join the output folders of 'predict --num-parts N' into one",
        description="Check that every part of a split run finished (all N parts present, each "
        "with all of its files done), then write one predictions.csv (and submission).",
    )
    p.add_argument("parts", nargs="+", metavar="DIR", help="the parts' output folders")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the merged table")
    p.add_argument("--submission", metavar="CSV", help="also write an HC18 submission CSV")


def _cmd_merge(args: argparse.Namespace) -> int:
    from fetalhead.batch import merge_parts

    n = merge_parts(
        [Path(p) for p in args.parts],
        Path(args.out),
        Path(args.submission) if args.submission else None,
    )
    print(f"merged {len(args.parts)} parts, {n} rows -> {Path(args.out) / 'predictions.csv'}")
    return 0


def _add_destination(p: argparse.ArgumentParser, what: str) -> None:
    """--forward or --stow-url: where DICOM reports go."""
    dest = p.add_mutually_exclusive_group()
    dest.add_argument("--forward", metavar="HOST:PORT:AET", help=f"send {what} by C-STORE here")
    dest.add_argument("--stow-url", metavar="URL", help="or by STOW-RS to this DICOMweb base")


def _add_node(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "node",
        help="DICOM node: receive ultrasound images (C-STORE), measure, send SRs on",
        description="A C-STORE SCP with C-ECHO. Received images are spooled before they are "
        "acknowledged, measured, and each measured frame's SR (TID 5000) is sent by C-STORE "
        "or STOW-RS, retried with back-off while the destination is down.",
    )
    p.add_argument("--ae-title", default="FETALHEAD")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--spool", default="fetalhead-spool", help="spool folder (default %(default)s)")
    _add_destination(p, "the SR of every received frame")
    p.add_argument(
        "--allow-aet", action="append", default=[], metavar="AET",
        help="accept only these calling AE titles (repeatable; default: any)",
    )  # fmt: skip
    p.add_argument("--weights", metavar="FILE", help="checkpoint (default: shipped weights)")


def _cmd_node(args: argparse.Namespace) -> int:
    import signal
    import threading

    from fetalhead.node import DicomNode, NodeConfig
    from fetalhead.predict import HeadMeasurer

    config = NodeConfig(
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        spool=Path(args.spool),
        forward=args.forward,
        stow_url=args.stow_url,
        allowed_callers=tuple(args.allow_aet),
    )
    node = DicomNode(config, HeadMeasurer.from_pretrained(args.weights))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node.start()
    try:
        while not stop.wait(60):
            node.log_status()
    except KeyboardInterrupt:
        pass
    node.stop()
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX (dynamic batch, embedded metadata)")
    p.add_argument("--weights", metavar="FILE", help="checkpoint (default: shipped weights)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)


def _cmd_export(args: argparse.Namespace) -> int:
    from fetalhead.infer.onnx import export_onnx, onnx_available
    from fetalhead.model import Checkpoint
    from fetalhead.predict import DEFAULT_WEIGHTS

    if not onnx_available():
        raise RuntimeError("export needs onnx and onnxruntime: pip install 'fetalhead[onnx]'")
    path = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    diff = export_onnx(Checkpoint.load(path), args.out, args.opset)
    print(f"wrote {args.out}; max abs difference of logits vs PyTorch: {diff:.3g}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page and REST API (needs fetalhead[serve])")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--weights", metavar="FILE", help="checkpoint (default: shipped weights)")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    _add_destination(p, "the SR of each accepted review")


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from fetalhead.serve import ServeSettings, serve
    except ImportError as exc:
        raise RuntimeError(
            f"serve needs the web extras: pip install 'fetalhead[serve]' ({exc})"
        ) from None
    settings = ServeSettings(forward=args.forward, stow_url=args.stow_url)
    serve(args.weights, args.host, args.port, args.backend, settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fetalhead`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fetalhead",
        description="Foetal head biometry in 2D ultrasound (research use, not a medical device).",
    )
    parser.add_argument("--version", action="version", version=f"fetalhead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_merge(sub)
    _add_node(sub)
    _add_train(sub)
    _add_export(sub)
    _add_serve(sub)
    return parser


COMMANDS = {
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "merge": _cmd_merge,
    "node": _cmd_node,
    "train": _cmd_train,
    "export": _cmd_export,
    "serve": _cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fetalhead`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
    )
    from fetalhead.predict import NoWeightsError

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (InputError, NoWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
