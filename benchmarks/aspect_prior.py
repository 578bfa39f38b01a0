"""Would a prior on the head's shape steady its long axis? Held-out images, judged fold by fold.

The HC error of second- and third-trimester heads sits mostly in the semi-major axis
(half the OFD; ``benchmarks/axis_errors.py``), whose ends are the walls parallel to the
beam, while the semi-minor axis (half the BPD) is measured about twice as well. The
heads' shape varies little: the ratio of the reference ellipses' axes (minor / major,
the cephalic index's counterpart) has an SD of about 0.045 in every band. So the
semi-minor axis predicts the semi-major one, ``b / r``, with ``r`` the mean ratio of the
band's reference heads, and the two estimates can be blended:

    a' = (1 - w) * a + w * b / r

For each held-out image of a ``scripts/cross_validate.py`` run, the map is measured as
``fetalhead predict`` does (:func:`fetalhead.predict.fit_by_band`, levels by HC band).
Then, fold by fold, ``r`` (the mean reference ratio of each band, from the images the
other folds held out) and ``w`` (per band, on a grid, the one with the least ADF on the
other folds' rows) are chosen without the fold, and applied to it. The report gives the
paired ADF change against the plain fit, per trimester, with 95 % bootstrap intervals
over scan prefixes, and the ratio and weight of each band chosen on all folds (what
the weights carry, ``inference.shape_prior``; ``--out`` writes them with the evidence as
JSON for ``scripts/calibrate_weights.py --shape-prior``, and the per-image rows beside
it as ``per_image.csv``). With ``--per-image`` (the
committed ``per_image.csv`` of the same folds, with the interval's inputs) it also
checks the 90 % HC interval, calibrated at P = 0.6 on the other folds, against the HC
with the prior. With ``--paired-with`` (this script's ``per_image.csv`` of another run
of the same folds) it compares two recipes as ``predict`` would measure with each, image
by image. HC18 images (van den Heuvel et al. 2018, CC BY 4.0).

    python benchmarks/aspect_prior.py ../shared/data/hc18/training_set --run runs/cv5_s2 \
        --per-image benchmarks/results/shipped_cv5/per_image.csv \
        --out benchmarks/results/aspect_prior/report.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from cv_report import (
    TRIMESTERS,
    case_row,
    cluster_bootstrap,
    ellipse_metrics,
    fmt,
    held_out_fits,
    parse_run_arguments,
    read_per_image_csv,
)

from fetalhead.data import Case, label_ellipse
from fetalhead.geometry.ellipse import Ellipse, blend_long_axis, ramanujan_perimeter
from fetalhead.uncertainty import band_of, fit_interval

#: The blend weights tried for each band.
WEIGHTS = tuple(np.round(np.arange(0.0, 1.001, 0.05), 2))


#: Per image: the fitted and the reference ellipse (pixels), the case, the image shape.
Geometry = dict[str, tuple[Ellipse, Ellipse, Case, tuple[int, int]]]


def held_out_rows(data: str, run: Path, levels: dict[str, float]) -> tuple[list[dict], Geometry]:
    """Rows of the held-out images with a head, and their ellipses.

    Each row has the case columns and both ellipses' axes in mm; the geometry keeps
    each image's fitted and reference ellipse for the overlap measures.
    """
    rows, geometry = [], {}
    for fold, case, e, lb in held_out_fits(data, run, levels):
        ref, px = label_ellipse(case), case.pixel_size_mm
        geometry[case.image.name] = (e, ref, case, (lb.in_h, lb.in_w))
        major, minor = max(e.a, e.b) * px, min(e.a, e.b) * px
        rows.append(
            case_row(case, fold)
            | {
                "band": band_of(ramanujan_perimeter(major, minor)),
                "major_mm": major,
                "minor_mm": minor,
                "ref_major_mm": max(ref.a, ref.b) * px,
                "ref_minor_mm": min(ref.a, ref.b) * px,
            }
        )
    return rows, geometry


def blended_hc(row: dict, ratio: float, w: float) -> float:
    """HC (mm) with the semi-major axis blended with ``minor / ratio`` by weight ``w``."""
    e = Ellipse(0.0, 0.0, row["major_mm"], row["minor_mm"], 0.0)
    return blend_long_axis(e, ratio, w).perimeter


def mean_ratio(rows: list[dict], band: str) -> float:
    """Mean minor / major ratio of the reference ellipses of ``band``'s rows."""
    sel = [r for r in rows if r["band"] == band]
    return float(np.mean([r["ref_minor_mm"] / r["ref_major_mm"] for r in sel]))


def choose(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Per band, ``(ratio, w)``: the band's mean reference ratio, and the ADF-minimising weight."""
    out = {}
    for band in TRIMESTERS:
        sel = [r for r in rows if r["band"] == band]
        ratio = mean_ratio(rows, band)
        adf = [np.mean([abs(blended_hc(r, ratio, w) - r["hc_ref_mm"]) for r in sel])
               for w in WEIGHTS]  # fmt: skip
        out[band] = (ratio, float(WEIGHTS[int(np.argmin(adf))]))
    return out


def cross_fold(rows: list[dict]) -> tuple[list[dict], dict[int, dict]]:
    """Each row with ``hc_plain_mm`` and ``hc_prior_mm``, the prior chosen without its fold."""
    picks, out = {}, []
    for fold in sorted({r["fold"] for r in rows}):
        picks[fold] = choose([r for r in rows if r["fold"] != fold])
        for r in rows:
            if r["fold"] == fold:
                ratio, w = picks[fold][r["band"]]
                plain = ramanujan_perimeter(r["major_mm"], r["minor_mm"])
                out.append(
                    r
                    | {"prior_ratio": ratio, "prior_weight": w, "hc_plain_mm": plain}
                    | {"hc_prior_mm": blended_hc(r, ratio, w)}
                )
    return out, picks


def overlap(rows: list[dict], geometry: Geometry) -> list[dict]:
    """Each row with the HC18 DSC and HD (mm) of its ellipse before and after the prior."""
    out = []
    for r in rows:
        e, ref, case, shape = geometry[r["filename"]]
        prior = blend_long_axis(e, r["prior_ratio"], r["prior_weight"])
        plain_m, prior_m = (ellipse_metrics(x, case, ref, shape) for x in (e, prior))
        out.append(
            r
            | {"dsc_plain": plain_m["dsc"], "hd_plain_mm": plain_m["hd_mm"]}
            | {"dsc_prior": prior_m["dsc"], "hd_prior_mm": prior_m["hd_mm"]}
        )
    return out


def interval_coverage(
    rows: list[dict], per_image: Path, key: str, level: float = 0.9
) -> dict[str, float]:
    """Coverage of the reference by the interval around ``row[key]``, per trimester.

    The interval (learned scale) is calibrated at P = 0.6 on the other folds' rows of
    ``per_image``, as the shipped one is; its relative width is read with each image's
    own inputs there and its HC before the prior, as ``predict`` reads it.
    """
    cal = {r["filename"]: r for r in read_per_image_csv(per_image)[0] if "blur" in r}
    hit: dict[str, list[bool]] = {t: [] for t in (*TRIMESTERS, "all")}
    for fold in sorted({r["fold"] for r in rows}):
        model = fit_interval([r for r in cal.values() if r["fold"] != fold], level, "learned")
        for r in (r for r in rows if r["fold"] == fold and r["filename"] in cal):
            # As predict does: the width is read with the fit before the prior.
            half = r[key] * model.scale(r["hc_plain_mm"], cal[r["filename"]])
            low, high = r[key] - half, r[key] + half
            for group in (r["trimester"], "all"):
                hit[group].append(bool(low <= r["hc_ref_mm"] <= high))
    return {k: float(np.mean(v)) for k, v in hit.items() if v}


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per trimester and over all: ADF and DF plain and with the prior, and the paired change.

    Each value is ``(mean, low, high)``, a 95 % bootstrap interval over scan prefixes.
    """
    out = {}
    for group in (*TRIMESTERS, "all"):
        sel = [r for r in rows if group in ("all", r["trimester"])]
        g = np.array([r["prefix"] for r in sel])
        ref = _column(sel, "hc_ref_mm")
        df_p = _column(sel, "hc_plain_mm") - ref
        df_b = _column(sel, "hc_prior_mm") - ref
        out[group] = {
            "n": len(sel),
            "adf_plain": cluster_bootstrap(np.abs(df_p), g),
            "adf_prior": cluster_bootstrap(np.abs(df_b), g),
            "adf_change": cluster_bootstrap(np.abs(df_b) - np.abs(df_p), g),
            "df_plain": cluster_bootstrap(df_p, g),
            "df_prior": cluster_bootstrap(df_b, g),
        }
        for key in ("dsc_plain", "dsc_prior", "hd_plain_mm", "hd_prior_mm"):
            if all(key in r for r in sel):
                out[group][key] = cluster_bootstrap(_column(sel, key), g)
    return out


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def table(stats: dict[str, dict]) -> str:
    """:func:`summary` as a Markdown table."""
    header = ["trimester", "images", "ADF plain (mm)", "ADF with the prior (mm)"]
    header += ["paired change (mm)", "DF plain (mm)", "DF with the prior (mm)"]
    rows = [
        [
            group,
            str(st["n"]),
            fmt(st["adf_plain"]),
            fmt(st["adf_prior"]),
            *(fmt(st[k], sign=True) for k in ("adf_change", "df_plain", "df_prior")),
        ]
        for group, st in stats.items()
    ]
    lines = markdown(header, rows)
    if "dsc_plain" in stats["all"]:
        header = ["trimester", "DSC plain (%)", "DSC with the prior (%)", "HD plain (mm)"]
        rows = [
            [
                group,
                fmt(st["dsc_plain"], 100),
                fmt(st["dsc_prior"], 100),
                fmt(st["hd_plain_mm"]),
                fmt(st["hd_prior_mm"]),
            ]
            for group, st in stats.items()
        ]
        lines += ["", *markdown([*header, "HD with the prior (mm)"], rows)]
    return "\n".join(lines)


def paired_change(rows: list[dict], other: list[dict]) -> dict[str, dict]:
    """Against another run's rows of this script: the same images, each with its prior.

    Per trimester and over all: ADF of both with the prior (each run's own, chosen
    fold by fold), the paired change (this run minus the other), and the paired changes
    of DSC and HD. Each value is ``(mean, low, high)`` over scan prefixes.
    """
    base = {r["filename"]: r for r in other}
    both = [r for r in rows if r["filename"] in base]
    out = {}
    for group in (*TRIMESTERS, "all"):
        mine = [r for r in both if group in ("all", r["trimester"])]
        if not mine:
            continue
        theirs = [base[r["filename"]] for r in mine]
        g = np.array([r["prefix"] for r in mine])

        adf, adf_base = (
            np.abs(_column(x, "hc_prior_mm") - _column(x, "hc_ref_mm")) for x in (mine, theirs)
        )
        out[group] = {
            "n": len(mine),
            "adf_base": cluster_bootstrap(adf_base, g),
            "adf": cluster_bootstrap(adf, g),
            "adf_change": cluster_bootstrap(adf - adf_base, g),
            "dsc_change": cluster_bootstrap(
                _column(mine, "dsc_prior") - _column(theirs, "dsc_prior"), g
            ),
            "hd_change": cluster_bootstrap(
                _column(mine, "hd_prior_mm") - _column(theirs, "hd_prior_mm"), g
            ),
        }
    return out


def paired_table(stats: dict[str, dict]) -> str:
    """:func:`paired_change` as a Markdown table."""
    header = ["trimester", "images", "ADF, the other run (mm)", "ADF, this run (mm)"]
    header += ["paired change (mm)", "DSC change (pp)", "HD change (mm)"]
    rows = [
        [
            group,
            str(st["n"]),
            fmt(st["adf_base"]),
            fmt(st["adf"]),
            fmt(st["adf_change"], sign=True),
            fmt(st["dsc_change"], 100, sign=True),
            fmt(st["hd_change"], sign=True),
        ]
        for group, st in stats.items()
    ]
    return "\n".join(markdown(header, rows))


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, help="write the choice and its evidence as JSON here")
    ap.add_argument("--per-image", type=Path, help="cv_report.py's per_image.csv of the folds")
    ap.add_argument(
        "--leave-out",
        nargs="*",
        default=[],
        metavar="FILE",
        help="images to leave out of the tables (for example those predict gives no number)",
    )
    ap.add_argument(
        "--paired-with",
        type=Path,
        metavar="CSV",
        help="the per_image.csv this script wrote for another run of the same folds (the "
        "recipe this one builds on): compare the two image by image, each with its prior",
    )


def main() -> None:
    args, levels = parse_run_arguments(__doc__.splitlines()[0], options)
    measured, geometry = held_out_rows(args.data, args.run, levels)
    rows, picks = cross_fold(measured)
    measured_all = overlap(rows, geometry)
    rows = [r for r in measured_all if r["filename"] not in args.leave_out]
    final = choose(measured_all)  # chosen on every image a head was found in
    folds = sorted(picks)
    print(
        f"# A shape prior on the semi-major axis: {len(rows)} held-out images of {args.run} "
        f"(folds {folds}), levels by HC band {args.levels[0]:g} / {args.levels[1]:g} / "
        f"{args.levels[2]:g}; ratio and weight of each band chosen on the other folds\n"
    )
    if args.leave_out:
        print(f"Chosen on all {len(measured_all)}; left out of the tables: {args.leave_out}\n")
    print("| fold | " + " | ".join(f"{b}: ratio, w" for b in TRIMESTERS) + " |")
    print("|---|" + "---|" * len(TRIMESTERS))
    for fold, p in picks.items():
        cells = " | ".join(f"{p[b][0]:.3f}, {p[b][1]:.2f}" for b in TRIMESTERS)
        print(f"| {fold} | {cells} |")
    cells = " | ".join(f"{final[b][0]:.3f}, {final[b][1]:.2f}" for b in TRIMESTERS)
    print(f"| all folds (what the weights carry) | {cells} |")
    spread = []
    for band in TRIMESTERS:
        ratios = [r["ref_minor_mm"] / r["ref_major_mm"] for r in measured_all if r["band"] == band]
        spread.append(f"{band} {np.mean(ratios):.3f} (SD {np.std(ratios):.3f}, {len(ratios)})")
    print("\nReference minor / major ratio by band of the measured HC: " + ", ".join(spread))
    stats = summary(rows)
    print()
    print(table(stats))
    cover = {}
    for key in ("hc_plain_mm", "hc_prior_mm") if args.per_image else ():
        cover[key] = interval_coverage(rows, args.per_image, key)
        print(
            f"\n90 % HC interval (learned scale, calibrated at P = 0.6 on the other folds) "
            f"around {key} covers the reference: "
            + ", ".join(f"{k} {v:.1%}" for k, v in cover[key].items())
        )
    paired = None
    if args.paired_with:
        paired = paired_change(rows, read_per_image_csv(args.paired_with)[0])
        print(f"\nAgainst {args.paired_with}, the same images, each run with its own prior:\n")
        print(paired_table(paired))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "prior": {b: {"ratio": final[b][0], "weight": final[b][1]} for b in TRIMESTERS},
            "picks_by_fold": {
                str(k): {b: {"ratio": p[b][0], "weight": p[b][1]} for b in TRIMESTERS}
                for k, p in picks.items()
            },
            "n": len(rows),
            "left_out": args.leave_out,
            "folds": folds,
            "levels": levels,
            "interval90_coverage": cover or None,
            "accuracy_mm": stats,
            "paired_with": None
            if paired is None
            else {"per_image": str(args.paired_with), "change": paired},
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        with open(args.out.with_name("per_image.csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(measured_all)


if __name__ == "__main__":
    main()
