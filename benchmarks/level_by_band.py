"""A boundary level per HC band, chosen and judged by nested cross-validation.

The 5-fold held-out rows (``benchmarks/results/cv5/per_image.csv``, from
``cv_report.py``) hold each image's HC error at the boundary levels P = 0.55, 0.6,
0.65 and 0.7. Small heads come out smallest at P = 0.6 and large heads largest
(third-trimester DF +1.4 mm). The rule judged here fits at P = 0.55, takes the
band of that HC (the trimester of its Hadlock GA, as the HC intervals do) and,
where the band's level differs, fits again at that level.

For each fold k, the level of each band is the one with the least ADF on the other
four folds; fold k is then measured with those levels and paired with P = 0.6, the
single level the weights used before. Reported: the levels each fold chose, the
paired ADF change with a 95 % bootstrap interval over scan prefixes, by trimester,
and DF by trimester, and the levels chosen on all five folds (what the weights carry).

With ``--network-pixels DATA`` (the labelled folder, for pixel sizes and image
sizes) it also judges, the same nested way, a rule of two levels split at a cut on the
HC in network pixels (the letterbox scale of each image) instead of the HC band: does
the best level follow the head's size on the network's grid, or in millimetres? It
always judges, paired with the three bands, five finer bands of HC chosen the same
nested way: does the level want more than three steps?

Usage::

    python benchmarks/level_by_band.py benchmarks/results/cv5/per_image.csv
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from cv_report import TRIMESTERS, cluster_bootstrap, fmt, read_per_image_csv

from fetalhead.uncertainty import IntervalScale, band_of, fit_interval

#: Levels the held-out rows carry.
LEVELS = (0.55, 0.6, 0.65, 0.7)
#: The level the band is read at (the common band's level; checked below).
FIRST_FIT = 0.55
#: The single level the weights used before.
BASE = 0.6


def df_at(row: dict, level: float) -> float:
    return float(row.get(f"level{level:g}_df_mm", math.nan))


def choose(rows: list[dict], key: str = "band") -> dict:
    """The level of least ADF in each band (or each value of another row key)."""
    out = {}
    for band in sorted({r[key] for r in rows}, key=str):
        sub = [r for r in rows if r[key] == band]
        out[band] = min(LEVELS, key=lambda lv: float(np.mean([abs(df_at(r, lv)) for r in sub])))
    return out


#: Finer HC bands (mm, of the HC at P = 0.55) that the finer rule is judged with.
FINE_CUTS_MM = (150.0, 200.0, 250.0, 300.0)


def finer_bands(rows: list[dict], folds: list[int]) -> tuple:
    """Paired ADF change of five HC bands (cut at :data:`FINE_CUTS_MM`) against the three.

    Both rules are chosen the same nested way; each row's ``band_df_mm`` (the three-band
    rule's held-out error) must be set.
    """
    for r in rows:
        r["fine_band"] = int(np.searchsorted(FINE_CUTS_MM, df_at(r, FIRST_FIT) + r["hc_ref_mm"]))
    diff, groups = [], []
    for k in folds:
        pick = choose([r for r in rows if r["fold"] != k], key="fine_band")
        for r in (r for r in rows if r["fold"] == k):
            level = pick.get(r["fine_band"], BASE)
            diff.append(abs(df_at(r, level)) - abs(r["band_df_mm"]))
            groups.append(r["prefix"])
    return cluster_bootstrap(np.array(diff), np.array(groups))


#: The network input of the fold models (configs/cv5_resunet16.yaml).
NET_HW = (192, 288)
#: Cuts (HC in network pixels) the network-pixel rule may choose from.
NET_PX_CUTS = (400, 450, 500, 550, 600)


def network_pixel_rule(rows: list[dict], data: str, folds: list[int]) -> tuple:
    """Paired ADF change of a two-level rule cut on the HC in network pixels (nested)."""
    from PIL import Image

    from fetalhead.data import find_cases
    from fetalhead.geometry.letterbox import Letterbox

    net_per_px = {}
    for c in find_cases(data):
        w, h = Image.open(c.image).size
        net_per_px[c.image.name] = Letterbox(h, w, *NET_HW).scale[0] / c.pixel_size_mm
    for r in rows:
        r["net_px"] = (df_at(r, FIRST_FIT) + r["hc_ref_mm"]) * net_per_px[r["filename"]]
    diff, groups = [], []
    for k in folds:
        train = [r for r in rows if r["fold"] != k]

        def cost(cut: float, lo: float, hi: float, rows: list[dict] = train) -> float:
            return float(np.mean([abs(df_at(r, lo if r["net_px"] < cut else hi)) for r in rows]))

        cut, lo, hi = min(
            ((c, a, b) for c in NET_PX_CUTS for a in LEVELS for b in LEVELS),
            key=lambda p: cost(*p),
        )
        for r in (r for r in rows if r["fold"] == k):
            level = lo if r["net_px"] < cut else hi
            diff.append(abs(df_at(r, level)) - abs(df_at(r, BASE)))
            groups.append(r["prefix"])
    return cluster_bootstrap(np.array(diff), np.array(groups))


def interval_coverage(
    rows: list[dict], folds: list[int], level: float = 0.9, scale: IntervalScale = "residual"
) -> dict | None:
    """Coverage of the banded HC by the interval calibrated at P = 0.6 on the other folds.

    The shipped interval model is calibrated on the rows at P = 0.6; this checks how
    it covers the HC that the levels by band report, fold by fold, per trimester.
    ``None`` where the rows carry no features for ``scale``.
    """
    if not any("rel_rms" in r and (scale == "residual" or "blur" in r) for r in rows):
        return None
    hit, tri = [], []
    for k in folds:
        model = fit_interval([r for r in rows if r["fold"] != k], level, scale)
        for r in (r for r in rows if r["fold"] == k and "rel_rms" in r):
            hc = r["band_df_mm"] + r["hc_ref_mm"]
            low, high = model.interval(hc, r)
            hit.append(low <= r["hc_ref_mm"] <= high)
            tri.append(r["trimester"])
    hits, t = np.array(hit), np.array(tri)
    return {"all": float(hits.mean())} | {x: float(hits[t == x].mean()) for x in TRIMESTERS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("per_image", type=Path)
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--network-pixels", metavar="DATA", help="also judge a cut in network pixels")
    args = ap.parse_args()
    rows, _ = read_per_image_csv(args.per_image)
    rows = [r for r in rows if all(math.isfinite(df_at(r, lv)) for lv in LEVELS)]
    for r in rows:
        r["band"] = band_of(df_at(r, FIRST_FIT) + r["hc_ref_mm"])
    folds = sorted({r["fold"] for r in rows})
    picks, new, old, groups, tri = {}, [], [], [], []
    for k in folds:
        pick = choose([r for r in rows if r["fold"] != k])
        picks[k] = pick
        for r in (r for r in rows if r["fold"] == k):
            r["band_df_mm"] = df_at(r, pick[r["band"]])
            new.append(r["band_df_mm"])
            old.append(df_at(r, BASE))
            groups.append(r["prefix"])
            tri.append(r["trimester"])
    new_a, old_a = np.array(new), np.array(old)
    g, t = np.array(groups), np.array(tri)
    diff = np.abs(new_a) - np.abs(old_a)
    final = choose(rows)
    print(f"# level by band: {len(rows)} held-out images, folds {folds}, nested")
    for k, pick in picks.items():
        print(f"fold {k}: levels chosen on the other folds {pick}")
    print(f"levels chosen on all folds (shipped): {final}")
    if final["second"] != FIRST_FIT:
        print(f"note: the second band's level is {final['second']}, not {FIRST_FIT}")
    print()
    print("| images | n | ADF at P = 0.6 | ADF by band | paired change | DF at 0.6 | DF by band |")
    print("|---|---|---|---|---|---|---|")
    report: dict = {"picks_by_fold": picks, "levels": final, "n": len(rows)}
    for label, idx in [("all", np.ones(len(t), bool)), *[(x, t == x) for x in TRIMESTERS]]:
        res = {
            "adf_base": cluster_bootstrap(np.abs(old_a[idx]), g[idx]),
            "adf_band": cluster_bootstrap(np.abs(new_a[idx]), g[idx]),
            "adf_change": cluster_bootstrap(diff[idx], g[idx]),
            "df_base": cluster_bootstrap(old_a[idx], g[idx]),
            "df_band": cluster_bootstrap(new_a[idx], g[idx]),
        }
        report[label] = res | {"n": int(idx.sum())}
        print(
            f"| {label} | {int(idx.sum())} | {fmt(res['adf_base'])} | {fmt(res['adf_band'])} | "
            f"{fmt(res['adf_change'], sign=True)} | {fmt(res['df_base'], sign=True)} | "
            f"{fmt(res['df_band'], sign=True)} |"
        )
    for scale, key in (("residual", ""), ("learned", "_learned")):
        cover = interval_coverage(rows, folds, scale=scale)
        report[f"interval90_coverage_of_banded_hc{key}"] = cover
        if cover is not None:
            print(
                f"\n90 % HC interval ({scale} scale) calibrated at P = 0.6 on the other folds, "
                "covering the banded HC: " + ", ".join(f"{k} {v:.1%}" for k, v in cover.items())
            )
    finer = finer_bands(rows, folds)
    report["finer_bands_adf_change"] = finer
    print(
        f"\nfive HC bands (cuts {', '.join(f'{c:g}' for c in FINE_CUTS_MM)} mm) instead of the "
        f"three, nested: {fmt(finer, sign=True)} mm"
    )
    if args.network_pixels:
        change = network_pixel_rule(rows, args.network_pixels, folds)
        report["network_pixel_rule_adf_change"] = change
        print(f"\ntwo levels cut on the HC in network pixels, nested: {fmt(change, sign=True)} mm")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
