"""Training recipes side by side, paired image by image on the same cross-validation folds.

Each run directory is what ``scripts/cross_validate.py`` writes for one recipe
(``RUN/foldK/heldout_maps.npz`` and ``log.csv``). For every variant, the folds it
shares with the base recipe are post-processed as ``fetalhead predict`` does
(``benchmarks/cv_report.py``, the same cache) and compared on the same held-out
images: HC18 metrics of each, the paired ADF difference (variant - base) with a 95 %
bootstrap interval over scan prefixes, per trimester, and the training wall time
of those folds on this machine. The base may also be given as the ``per_image.csv``
that ``cv_report.py`` wrote for it (``benchmarks/results/cv5/per_image.csv`` is the
8-epoch recipe's, committed), for when its runs are no longer at hand; its training
time is then not known.

Usage::

    python benchmarks/compare_recipes.py ../shared/data/hc18/training_set \
        --base runs/cv5 --variant float32=runs/cv5_fp32 --variant deep_supervision=runs/cv5_ds \
        --out benchmarks/results/recipes
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from cv_report import (
    TRIMESTERS,
    cluster_bootstrap,
    fmt,
    metric_summary,
    per_image,
    read_per_image_csv,
)


def wall_time_s(run: Path, folds: list[int]) -> float:
    """Training seconds of these folds, from each fold's ``log.csv``.

    A fold fine-tuned from another run's weights (a second stage) adds the seconds of
    the stage it started from.
    """
    total = 0.0
    for k in folds:
        fold = run / f"fold{k}"
        with open(fold / "log.csv", newline="") as fh:
            total += sum(float(r["seconds"]) for r in csv.DictReader(fh))
        init = json.loads((fold / "config.json").read_text()).get("init_weights")
        if init:
            total += wall_time_s(Path(init).parents[1], [k])
    return total


def rows_of(data: str, path: Path, level: float) -> list[dict]:
    """Held-out rows of a recipe: from its runs, or from a ``per_image.csv``."""
    if path.suffix == ".csv":
        return read_per_image_csv(path)[0]
    return per_image(data, path, level)


#: The per-image columns (``plain_<name>``) each recipe is summarised by.
METRICS = ("dsc", "hd_mm", "df_mm")


def compare(base: list[dict], variant: list[dict]) -> dict:
    """Paired metrics on the images both recipes measured."""
    by_name = {r["filename"]: r for r in base}
    pairs = [
        (by_name[r["filename"]], r)
        for r in variant
        if r["filename"] in by_name
        and np.isfinite(r.get("plain_df_mm", np.nan))
        and np.isfinite(by_name[r["filename"]].get("plain_df_mm", np.nan))
    ]
    g = np.array([b["prefix"] for b, _ in pairs])
    tri = np.array([b["trimester"] for b, _ in pairs])
    out: dict = {"n": len(pairs)}
    for name, idx in (("base", 0), ("variant", 1)):
        col = {k: np.array([p[idx][f"plain_{k}"] for p in pairs]) for k in METRICS}
        out[name] = metric_summary(col["dsc"], col["hd_mm"], col["df_mm"], g, tri)
    diff = np.array([abs(v["plain_df_mm"]) - abs(b["plain_df_mm"]) for b, v in pairs])
    out["adf_diff_mm"] = cluster_bootstrap(diff, g)
    out["adf_diff_by_trimester_mm"] = {
        t: cluster_bootstrap(diff[tri == t], g[tri == t]) for t in TRIMESTERS
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument(
        "--base",
        required=True,
        type=Path,
        help="the reference recipe's runs, or its per_image.csv from cv_report.py",
    )
    ap.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME=RUN_DIR or NAME=per_image.csv (e.g. from cv_refine.py), may be repeated",
    )
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--boundary-level", type=float, default=0.6)
    args = ap.parse_args()
    from_csv = args.base.suffix == ".csv"
    base_rows = rows_of(args.data, args.base, args.boundary_level)
    lines = [
        f"# Recipes against {args.base} (paired, same folds and images; boundary at p = "
        f"{args.boundary_level:g}; 95 % bootstrap intervals over scan prefixes)",
        "",
        "| recipe | folds | n | DSC % | HD mm | ADF mm | DF mm | ADF - base mm | "
        "training s (these folds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    trimester_lines = [
        "| recipe | trimester | n | ADF mm | DF mm | ADF - base mm |",
        "|---|---|---|---|---|---|",
    ]
    report = {}
    for spec in args.variant:
        name, _, run = spec.partition("=")
        if not run:
            ap.error(f"--variant takes NAME=RUN_DIR, got {spec!r}")
        rows = rows_of(args.data, Path(run), args.boundary_level)
        folds = sorted({r["fold"] for r in rows} & {r["fold"] for r in base_rows})
        res = compare([r for r in base_rows if r["fold"] in folds], rows)
        res["folds"] = folds
        res["runs"] = {"base": str(args.base), "variant": run}
        res["training_s"] = {
            "base": None if from_csv else wall_time_s(args.base, folds),
            "variant": None if run.endswith(".csv") else wall_time_s(Path(run), folds),
        }
        report[name] = res
        for label, key, secs in (
            ("base", "base", res["training_s"]["base"]),
            (name, "variant", res["training_s"]["variant"]),
        ):
            m = res[key]
            delta = "" if key == "base" else fmt(res["adf_diff_mm"], sign=True)
            lines.append(
                f"| {label} | {folds} | {res['n']} | {fmt(m['dsc'], 100)} | {fmt(m['hd_mm'])} | "
                f"{fmt(m['adf_mm'])} | {fmt(m['df_mm'], sign=True)} | {delta} | "
                f"{'' if secs is None else f'{secs:.0f}'} |"
            )
            for t in TRIMESTERS:
                b = m["by_trimester"][t]
                d = "" if key == "base" else fmt(res["adf_diff_by_trimester_mm"][t], sign=True)
                trimester_lines.append(
                    f"| {label} | {t} | {b['n']} | {fmt(b['adf_mm'])} | "
                    f"{fmt(b['df_mm'], sign=True)} | {d} |"
                )
    text = "\n".join([*lines, "", "By trimester:", "", *trimester_lines]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(text)


if __name__ == "__main__":
    main()
