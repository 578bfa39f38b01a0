"""Package a trained checkpoint as the shipped weights, with its evaluation attached.

Usage:
    .venv/bin/python scripts/package_weights.py RUN_DIR [EVAL_DIR] [--out WEIGHTS.pt]

Reads RUN_DIR/final.pt (the last epoch; ``--checkpoint best.pt`` for the epoch that
validation chose), RUN_DIR/log.csv (training wall time; for a fine-tuned run
also the log.csv of the run it started from) and EVAL_DIR/summary.json (from
``fetalhead evaluate``), and stores them together in the checkpoint's metadata so
that the weights describe themselves. Weights trained on every labelled image (no
validation split) have no images left to evaluate on: without EVAL_DIR their
``meta["evaluation"]`` says so, and the recipe's cross-validated accuracy is what
``scripts/calibrate_weights.py`` stores as ``meta["cross_validation"]``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from fetalhead.evaluate import weights_evaluation
from fetalhead.model import Checkpoint, count_parameters
from fetalhead.predict import DEFAULT_WEIGHTS


def training_stages(run_dir: Path, ck: Checkpoint) -> list[dict[str, object]]:
    """Epochs and wall time of this run and, first, of the runs it was fine-tuned from."""
    with open(run_dir / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    stage = {
        "run": str(run_dir),
        "epochs": len(log),
        "wall_time_s": round(sum(float(r["seconds"]) for r in log), 1),
    }
    start = ck.meta.get("recipe", {}).get("init_weights")
    if not start:
        return [stage]
    parent = Path(start).parent
    return [*training_stages(parent, Checkpoint.load(start)), stage]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("eval_dir", type=Path, nargs="?", help="'fetalhead evaluate' output folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument(
        "--checkpoint",
        default="final.pt",
        help="which of the run's checkpoints: final.pt (the last epoch, as cross-validation "
        "scores it) or best.pt (the epoch with the best validation Dice)",
    )
    args = ap.parse_args()

    ck = Checkpoint.load(args.run_dir / args.checkpoint)
    stages = training_stages(args.run_dir, ck)
    ck.meta["training_stages"] = stages
    ck.meta["checkpoint_chosen"] = (
        "the last epoch, chosen without looking at validation"
        if args.checkpoint == "final.pt"
        else f"{args.checkpoint} of {args.run_dir}"
    )
    ck.meta["training_wall_time_s"] = round(sum(float(s["wall_time_s"]) for s in stages), 1)
    ck.meta["epochs_run"] = sum(int(s["epochs"]) for s in stages)
    ck.meta["parameters"] = count_parameters(ck.build())
    if args.eval_dir is not None:
        summary = json.loads((args.eval_dir / "summary.json").read_text())
        ck.meta["evaluation"] = weights_evaluation(summary)
        # The settings those metrics were measured with; HeadMeasurer uses them by default.
        ck.meta["inference"] = {"tta": bool(summary["model"]["tta"])}
    else:
        ck.meta["evaluation"] = {
            "note": "no held-out images: trained on every labelled image of its data; the "
            "recipe's cross-validated accuracy is meta['cross_validation']"
        }
        ck.meta["inference"] = {"tta": False}
    ck.meta["licence_note"] = (
        "Trained on HC18 (van den Heuvel et al. 2018, doi:10.5281/zenodo.1327317), CC BY 4.0."
    )
    ck.save(args.out)
    size_mb = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size_mb:.1f} MB), epoch {ck.meta.get('epoch')}")


if __name__ == "__main__":
    main()
