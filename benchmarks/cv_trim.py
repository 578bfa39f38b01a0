"""Cut merged tissue off the head region before the ellipse fit, on held-out folds.

For each fold of a ``scripts/cross_validate.py`` run, the held-out maps
(``heldout_maps.npz``, no TTA) are measured as ``fetalhead predict`` does (the full
path, the boundary level by HC band), once as shipped and once for each opening ratio
of ``--ratios`` (:func:`fetalhead.geometry.region.head_part`). Each setting's rows are
written as ``per_image_<name>.csv`` in the layout of ``cv_report.py`` (``plain_*``
columns) for ``compare_recipes.py``; the paired ADF change against the shipped
post-processing, with 95 % bootstrap intervals over scan prefixes, goes to
``report.md``, with every image whose HC moved by more than 1 mm.

Usage::

    python benchmarks/cv_trim.py ../shared/data/hc18/training_set --runs runs/cv5_s2 \
        --out benchmarks/results/trim --ratios 0.5
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from compare_recipes import compare
from cv_report import TRIMESTERS, case_row, fmt, metric_columns

from fetalhead.data import find_cases, label_ellipse
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.predict import fit_by_band
from fetalhead.readers import read_gray

COLUMNS = (
    "filename", "prefix", "fold", "hc_ref_mm", "trimester",
    "plain_hc_mm", "plain_df_mm", "plain_dsc", "plain_hd_mm", "plain_qc",
)  # fmt: skip


def measure_runs(
    data: str, runs: Path, levels: dict[str, float], ratios: list[float | None]
) -> dict[str, list[dict]]:
    """Rows of every held-out image for each opening ratio (``None``: as shipped)."""
    cases = {c.image.name: c for c in find_cases(data)}
    out: dict[str, list[dict]] = {name_of(r): [] for r in ratios}
    for fold_dir in sorted(runs.glob("fold*")):
        maps = fold_dir / "heldout_maps.npz"
        if not maps.exists():
            continue
        fold = int(fold_dir.name.removeprefix("fold"))
        z = np.load(maps)
        for name, plain in zip(z["names"], z["plain"], strict=True):
            case = cases[str(name)]
            h, w = read_gray(case.image).shape
            lb = Letterbox(h, w, *plain.shape, True)
            ref = label_ellipse(case)
            prob = plain.astype(np.float32)
            for ratio in ratios:
                e, _, _, reasons = fit_by_band(
                    prob, lb, "full", levels, levels["second"], case.pixel_size_mm, ratio
                )
                row = case_row(case, fold) | metric_columns("plain", e, case, ref, (h, w))
                row["plain_qc"] = "no_head_found" if e is None else ";".join(reasons) or "ok"
                out[name_of(ratio)].append(row)
    return out


def name_of(ratio: float | None) -> str:
    """The setting's name in file names and tables."""
    return "shipped" if ratio is None else f"open{ratio:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    ap.add_argument(
        "--levels",
        type=Path,
        default=Path(__file__).parent / "results/shipped_cv5/analysis/level_by_band.json",
        help="level_by_band.json whose `levels` are the boundary levels by HC band",
    )
    args = ap.parse_args()
    levels = json.loads(args.levels.read_text())["levels"]
    rows = measure_runs(args.data, args.runs, levels, [None, *args.ratios])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rs in rows.items():
        with open(args.out / f"per_image_{name}.csv", "w", newline="") as fh:
            wr = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
            wr.writeheader()
            wr.writerows(rs)
    base = rows["shipped"]
    lines = [
        f"# Opening before the ellipse fit, {args.runs} (levels by HC band {levels}; paired "
        "with the shipped post-processing; 95 % bootstrap intervals over scan prefixes)",
        "",
        "| setting | n | DSC % | HD mm | ADF mm | ADF - shipped mm | "
        + " | ".join(f"{t} ADF - shipped" for t in TRIMESTERS)
        + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    same = compare(base, base)
    m = same["base"]
    lines.append(
        f"| shipped | {same['n']} | {fmt(m['dsc'], 100)} | {fmt(m['hd_mm'])} | "
        f"{fmt(m['adf_mm'])} | | | | |"
    )
    report: dict = {"runs": str(args.runs), "levels": levels}
    moved_lines = ["", "Images whose HC moved by more than 1 mm:", ""]
    for ratio in args.ratios:
        name = name_of(ratio)
        res = compare(base, rows[name])
        report[name] = res
        m = res["variant"]
        by_t = " | ".join(fmt(res["adf_diff_by_trimester_mm"][t], sign=True) for t in TRIMESTERS)
        lines.append(
            f"| {name} | {res['n']} | {fmt(m['dsc'], 100)} | {fmt(m['hd_mm'])} | "
            f"{fmt(m['adf_mm'])} | {fmt(res['adf_diff_mm'], sign=True)} | {by_t} |"
        )
        for b, v in zip(base, rows[name], strict=True):
            if abs(v["plain_hc_mm"] - b["plain_hc_mm"]) > 1.0 or (
                math.isnan(v["plain_hc_mm"]) != math.isnan(b["plain_hc_mm"])
            ):
                moved_lines.append(
                    f"- {name} {b['filename']} (fold {b['fold']}, {b['trimester']}): DF "
                    f"{b['plain_df_mm']:+.1f} -> {v['plain_df_mm']:+.1f} mm"
                )
    text = "\n".join(lines + moved_lines) + "\n"
    (args.out / "report.md").write_text(text)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(text)


if __name__ == "__main__":
    main()
