"""benchmarks/interval_scale.py: the residual interval scale against the learned one."""

import csv
import json
import sys

import pytest

from conftest import load_benchmark

#: An HC in each band: Hadlock GA 13.4, 22.2 and 34.4 weeks.
HC_BY_BAND = {"first": 80.0, "second": 200.0, "third": 300.0}


def rows() -> list[dict]:
    """5 folds; in each, 20 heads per band: 10 sharp maps 1 % off, 10 blurry maps 5 % off.

    Only the map's blur tells the two apart; the fit residual and clipping, which the
    residual scale reads, are the same for all.
    """
    out = []
    for fold in range(5):
        for band, hc in HC_BY_BAND.items():
            for i in range(20):
                blurry = i % 2 == 1
                err = 0.05 if blurry else 0.01
                row = {"filename": f"{fold}_{band}_{i}.png", "prefix": f"{fold}{band}{i}"}
                row |= {"fold": fold, "trimester": band, "plain_hc_mm": hc}
                row |= {"hc_ref_mm": hc - hc * err, "rel_rms": 0.25, "border": 0.0}
                row |= {"confidence": 0.5, "blur": 0.25 if blurry else 0.0}
                out.append(row | {"hole": 0.0, "spill": 0.0, "unsupported": 0.0})
    return out


def test_a_scale_that_reads_the_blur_narrows_the_sharp_heads(tmp_path) -> None:
    module = load_benchmark("interval_scale")
    path, out = tmp_path / "per_image.csv", tmp_path / "r.json"
    data = rows()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    sys.argv = ["interval_scale.py", str(path), "--out", str(out)]
    module.main()
    at_90 = {name: r["0.9"]["all"] for name, r in json.loads(out.read_text())["cross_fold"].items()}
    residual = at_90["residual (fit residual, clipping)"]
    learned = at_90["learned (the flag's inputs)"]
    # Residual: every image alike, so each band's quantile is the ceil(81 * 0.9) = 73rd
    # smallest of 80 calibration scores (40 at 0.01, 40 at 0.05): HC -/+ 5 %, widths
    # 8, 20 and 30 mm, median 20 mm, and every reference inside.
    assert residual == {"n": 300, "coverage": 1.0, "median_width_mm": pytest.approx(20.0)}
    # Learned: the blurry heads keep about HC -/+ 5 %, the sharp ones about -/+ 1 %
    # (1.9, 4.6 and 7.0 mm wide), so the median (between the widest sharp
    # and the narrowest blurry head, 8 mm) drops below 8 mm, still covering them all.
    assert learned["n"] == 300 and learned["coverage"] == 1.0
    assert 6.0 < learned["median_width_mm"] < 8.0


def test_the_table_marks_a_trimester_that_has_no_images() -> None:
    module = load_benchmark("interval_scale")
    res = {"all": {"n": 3, "coverage": 2 / 3, "median_width_mm": 10.0}}
    res |= {"second": {"n": 3, "coverage": 2 / 3, "median_width_mm": 10.0}}
    text = module.table("t", {"shipped": dict.fromkeys(module.LEVELS, res)})
    assert "| scale | level | first (0) | second (3) | third (0) | all (3) |" in text
    assert "| shipped | 90% | - | 66.7% / 10.0 | - | 66.7% / 10.0 |" in text
