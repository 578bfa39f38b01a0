"""Command-line interface: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fetalhead import __version__

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
    p.add_argument("--seed", type=int)
    p.add_argument("--max-images", type=int, help="use only the first N cases (smoke runs)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _cmd_train(args: argparse.Namespace) -> int:
    from fetalhead.train import TrainConfig, train

    hw: tuple[int | None, int | None] = (None, None)
    if args.image_size:
        parts = args.image_size.lower().split("x")
        try:
            hw = (int(parts[0]), int(parts[-1]))
        except ValueError:
            raise SystemExit(f"--image-size: expected H or HxW, got {args.image_size!r}") from None
    overrides = {
        "data": args.data,
        "out": args.out,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "image_h": hw[0],
        "image_w": hw[1],
        "start_filters": args.start_filters,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "max_images": args.max_images,
        "num_threads": args.threads,
        "device": args.device,
        "progress": False if args.no_progress else None,
    }
    if args.config:
        cfg = TrainConfig.from_file(args.config, **overrides)
    else:
        cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    result = train(cfg, resume=args.resume)
    print(f"best validation Dice {result.best_val_dice:.4f}; outputs in {result.run_dir}")
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
    _add_train(sub)
    return parser


COMMANDS = {"train": _cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fetalhead`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
