"""benchmarks/bias_by_scale.py: does the HC bias follow the head's pixels or the scale?"""

import csv
import json
import math
import sys

import pytest

from conftest import load_benchmark


def test_a_bias_that_follows_the_pixel_size_is_told_from_one_of_head_pixels(tmp_path) -> None:
    module = load_benchmark("bias_by_scale")
    rows, sizes = [], []
    # Heads of 1000-1600 pixels at 0.10-0.25 mm per pixel, the two drawn apart; each HC
    # is off by 1.5 % per unit of ln(pixel size / 0.15 mm), whatever its pixels.
    for i in range(60):
        hc_px, px = 1000.0 + 100.0 * (i % 7), 0.10 + 0.15 * (i % 11) / 10
        hc = hc_px * px
        name = f"{i:03d}_HC.png"
        rows.append({"filename": name, "prefix": f"{i:03d}", "fold": i % 2, "hc_ref_mm": hc,
                     "plain_df_mm": hc * 0.015 * math.log(px / 0.15)})  # fmt: skip
        sizes.append({"filename": name, "pixel size(mm)": px})
    per_image, px_csv, out = tmp_path / "p.csv", tmp_path / "px.csv", tmp_path / "r.json"
    for path, data in ((per_image, rows), (px_csv, sizes)):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    sys.argv = ["bias_by_scale.py", str(per_image), "--pixel-sizes", str(px_csv)]
    sys.argv += ["--fit-from", "0", "--out", str(out)]
    module.main()
    fit = json.loads(out.read_text())["fit"]
    assert fit["n"] == 60
    # Exactly linear in ln(pixel size): the fit gives 1.5 % per unit and 0 for the pixels,
    # on every resample too.
    assert fit["slopes"]["ln_pixel_size"] == pytest.approx([1.5, 1.5, 1.5], abs=1e-9)
    assert fit["slopes"]["ln_hc_px"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    # --folds keeps the rows of those folds only: the 30 even heads, the same slope.
    sys.argv = ["bias_by_scale.py", str(per_image), "--pixel-sizes", str(px_csv), "--folds", "0"]
    sys.argv += ["--fit-from", "0", "--out", str(out)]
    module.main()
    fit = json.loads(out.read_text())["fit"]
    assert fit["n"] == 30
    assert fit["slopes"]["ln_pixel_size"] == pytest.approx([1.5, 1.5, 1.5], abs=1e-9)
