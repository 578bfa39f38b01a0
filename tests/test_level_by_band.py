"""benchmarks/level_by_band.py: per-band boundary levels chosen on other folds."""

import csv
import json
import sys

from conftest import load_benchmark


def load():
    return load_benchmark("level_by_band")


def rows(fold: int) -> list[dict]:
    """Small heads measure best at P = 0.55, large ones at 0.7 (their DF is 0 there)."""
    out = []
    for i, (hc, best) in enumerate([(180.0, 0.55)] * 6 + [(310.0, 0.7)] * 6 + [(70.0, 0.55)] * 6):
        errors = {lv: 2.0 * abs(lv - best) / 0.05 + 0.1 * (i % 3) for lv in (0.55, 0.6, 0.65, 0.7)}
        row = {"filename": f"{fold}{i:02d}_HC.png", "prefix": f"{fold}{i:02d}", "fold": fold}
        tri = {180.0: "second", 310.0: "third", 70.0: "first"}[hc]
        row |= {"hc_ref_mm": hc - errors[0.55], "trimester": tri}
        out.append(row | {f"level{lv:g}_df_mm": e for lv, e in errors.items()})
    return out


def test_levels_are_chosen_per_band_and_judged_on_other_folds(tmp_path) -> None:
    module = load()
    all_rows = rows(0) + rows(1) + rows(2)
    for r in all_rows:
        r["band"] = module.band_of(r["level0.55_df_mm"] + r["hc_ref_mm"])
    assert module.choose(all_rows) == {"first": 0.55, "second": 0.55, "third": 0.7}
    path = tmp_path / "per_image.csv"
    with open(path, "w", newline="") as fh:
        keys = [k for k in all_rows[0] if k != "band"]
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(all_rows)
    sys.argv = ["level_by_band.py", str(path), "--out", str(tmp_path / "r.json")]
    module.main()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["levels"] == {"first": 0.55, "second": 0.55, "third": 0.7}
    # The large heads' |DF| falls from 4.0 + 0.1 * (i % 3) at P = 0.6 to 0.1 * (i % 3).
    assert report["all"]["n"] == 54
    change = report["all"]["adf_change"][0]
    assert abs(change - (-(6 * 4.0 + 12 * 2.0) / 18)) < 1e-9
    # Five finer HC bands pick each head's best level too: no change against three.
    assert report["finer_bands_adf_change"][0] == 0.0
