"""Is a second network pass worth it? Flip TTA and two-model ensembles, on the same folds.

Each run directory is what ``scripts/cross_validate.py`` writes (``RUN/foldK/
heldout_maps.npz``, plain and flipped-back maps of the held-out images). On the images
that every run holds out, this measures HC as ``fetalhead predict`` does (the boundary
at one level, |grad p|^2-weighted ellipse fit) from:

- each run's plain map (one network pass: the default's cost);
- each run with flip TTA, the mean of its plain and flipped maps (two passes);
- each pair of runs, the mean of their plain maps (two passes, two sets of weights).

Every two-pass variant is compared, image by image, with its one-pass members: the
paired ADF change against their mean, and against the better of the two on these
images (which no deployment could pick in advance, so it is the harder bar). Intervals
are 95 % bootstrap intervals over scan prefixes.

Usage::

    python benchmarks/ensemble_runs.py ../shared/data/hc18/training_set \
        --run seed42=runs/cv5_ema --run seed43=runs/cv5_rerun --run seed44=runs/cv5_seed44 \
        --out benchmarks/results/ensembles
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
from cv_report import TRIMESTERS, cluster_bootstrap, fmt
from numpy.typing import NDArray

from fetalhead.data import Case, find_cases
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.gestation import hadlock_1984, trimester
from fetalhead.postprocess import postprocess
from fetalhead.readers import read_gray

Maps = dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]
"""Held-out file name -> (plain map, flipped-back map) at network resolution."""


def load_maps(run: Path) -> Maps:
    """Every fold's held-out maps of one run, by file name (letterboxed runs only)."""
    out: Maps = {}
    for fold in sorted(run.glob("fold*")):
        path = fold / "heldout_maps.npz"
        if path.exists():
            if not json.loads((fold / "config.json").read_text()).get("keep_aspect", True):
                raise ValueError(f"{fold}: a squashed (keep_aspect: false) run is not supported")
            z = np.load(path)
            for name, plain, flipped in zip(z["names"], z["plain"], z["flipped"], strict=True):
                out[str(name)] = (plain.astype(np.float32), flipped.astype(np.float32))
    return out


def hc_error_mm(
    prob: NDArray[np.float32], case: Case, shape: tuple[int, int], level: float
) -> float:
    """DF (mm) of the HC measured from a network map, NaN where no head is found."""
    lb = Letterbox(shape[0], shape[1], *prob.shape)
    e, _, _, _ = postprocess(prob, lb, "full", level=level)
    return e.perimeter * case.pixel_size_mm - case.hc_mm if e is not None else math.nan


def variants_of(runs: list[str]) -> dict[str, tuple[str, ...]]:
    """Every variant measured, with the one-pass runs it is made of, in report order.

    A run alone (one pass) is made of itself; ``"RUN + flip"`` (flip TTA, two passes) of
    its run; ``"A & B"`` (the two runs' maps averaged, two passes) of both.
    """
    out: dict[str, tuple[str, ...]] = {}
    for run in runs:
        out[run] = (run,)
        out[f"{run} + flip"] = (run,)
    for a, b in itertools.combinations(runs, 2):
        out[f"{a} & {b}"] = (a, b)
    return out


def variant_errors(
    runs: dict[str, Maps], case: Case, shape: tuple[int, int], level: float
) -> dict[str, float]:
    """DF of every variant (:func:`variants_of`) for one image that all ``runs`` hold out."""
    name = case.image.name
    out = {}
    for variant, parts in variants_of(list(runs)).items():
        if len(parts) == 2:
            pa, pb = runs[parts[0]][name][0], runs[parts[1]][name][0]
            if pa.shape != pb.shape:
                pb = cv2.resize(pb, (pa.shape[1], pa.shape[0]), interpolation=cv2.INTER_LINEAR)
            prob = 0.5 * (pa + pb)
        else:
            plain, flipped = runs[parts[0]][name]
            prob = plain if variant == parts[0] else 0.5 * (plain + flipped)
        out[variant] = hc_error_mm(prob, case, shape, level)
    return out


def summarise(rows: list[dict], runs: list[str]) -> dict:
    """ADF of each variant and the paired change of each two-pass one, overall and by trimester.

    Every figure is over the same images: those where every variant found a head. How
    many images each variant found no head on is reported beside them.
    """
    made_of = variants_of(runs)
    variants = list(made_of)
    no_head = {v: sum(not math.isfinite(r["df"][v]) for r in rows) for v in variants}
    rows = [r for r in rows if all(math.isfinite(r["df"][v]) for v in variants)]
    g = np.array([r["prefix"] for r in rows])
    tri = np.array([r["trimester"] for r in rows])
    adf = {v: np.abs(np.array([r["df"][v] for r in rows])) for v in variants}
    out: dict = {"n": len(rows), "variants": {}}
    for v in variants:
        res: dict = {
            "passes": 1 if v in runs else 2,
            "no_head_found": no_head[v],
            "adf_mm": cluster_bootstrap(adf[v], g),
            "adf_by_trimester_mm": {
                t: cluster_bootstrap(adf[v][tri == t], g[tri == t])
                if (tri == t).any()
                else (math.nan,) * 3
                for t in TRIMESTERS
            },
        }
        if v not in runs:
            parts = made_of[v]
            mean_of = np.mean([adf[m] for m in parts], axis=0)
            better = min(parts, key=lambda m: float(adf[m].mean()))
            res["minus_members_mean_mm"] = cluster_bootstrap(adf[v] - mean_of, g)
            res["minus_better_member_mm"] = cluster_bootstrap(adf[v] - adf[better], g)
            res["better_member"] = better
        out["variants"][v] = res
    return out


def table(report: dict) -> str:
    lines = [
        f"# One network pass or two: {report['n']} images held out by every run, where "
        f"every variant found a head (boundary at P = {report['level']:g}; 95 % bootstrap "
        "intervals over scan prefixes)",
        "",
        "| variant | passes | no head found | ADF mm | first / second / third trimester ADF mm "
        "| ADF - mean of its one-pass members mm | ADF - the better member mm |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, res in report["variants"].items():
        by_t = " / ".join(f"{res['adf_by_trimester_mm'][t][0]:.2f}" for t in TRIMESTERS)
        paired = (
            f"{fmt(res['minus_members_mean_mm'], sign=True)} | "
            f"{fmt(res['minus_better_member_mm'], sign=True)} ({res['better_member']})"
            if res["passes"] == 2
            else " | "
        )
        lines.append(
            f"| {v} | {res['passes']} | {res['no_head_found']} | {fmt(res['adf_mm'])} | {by_t} "
            f"| {paired} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR, repeated")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--boundary-level", type=float, default=0.6)
    args = ap.parse_args()
    paths: dict[str, str] = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        if not path or "&" in name or name.endswith(" + flip"):
            ap.error(f"--run takes NAME=RUN_DIR (no '&' or ' + flip' in NAME), got {spec!r}")
        paths[name] = path
    runs = {name: load_maps(Path(path)) for name, path in paths.items()}
    shared = set.intersection(*(set(m) for m in runs.values()))
    if not shared:
        ap.error("the runs hold out no image in common")
    rows = []
    for case in find_cases(args.data):
        if case.image.name not in shared or case.hc_mm is None or case.pixel_size_mm is None:
            continue
        shape = read_gray(case.image).shape
        rows.append(
            {
                "filename": case.image.name,
                "prefix": case.prefix,
                "trimester": trimester(hadlock_1984(case.hc_mm).weeks),
                "df": variant_errors(runs, case, shape, args.boundary_level),
            }
        )
    report = summarise(rows, list(runs)) | {"level": args.boundary_level}
    report["runs"] = paths
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table(report) + "\n")
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "per_image.json").write_text(json.dumps(rows))
    print(table(report))


if __name__ == "__main__":
    main()
