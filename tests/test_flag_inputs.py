"""benchmarks/flag_inputs.py: candidate qc-flag inputs judged fold by fold."""

import csv
import json
import sys

from conftest import load_benchmark


def load():
    return load_benchmark("flag_inputs")


def rows() -> list[dict]:
    """5 folds of 40 heads, all measured 200 mm; 4 per fold are 8 mm off, the rest 1 mm.

    Every shipped input is the same for all of them; only the flipped map's HC tells
    the large errors (20 mm away) from the others (0.2 mm away).
    """
    out = []
    for fold in range(5):
        for i in range(40):
            err = 8.0 if i < 4 else 1.0
            row = {"filename": f"{fold}{i:02d}_HC.png", "prefix": f"{fold}{i:02d}", "fold": fold}
            row |= {"hc_ref_mm": 200.0 - err, "trimester": "second", "plain_hc_mm": 200.0}
            row |= {"hc_flip_mm": 200.0 + (20.0 if i < 4 else 0.2)}
            row |= {f"level{lv:g}_df_mm": err for lv in (0.55, 0.6, 0.65, 0.7)}
            row |= {"rel_rms": 0.02, "border": 0.0, "confidence": 0.98, "blur": 0.05}
            out.append(row | {"hole": 0.0, "spill": 0.0, "unsupported": 0.0})
    return out


def test_an_input_that_tells_the_large_errors_apart_catches_them(tmp_path) -> None:
    module = load()
    path = tmp_path / "per_image.csv"
    data = rows()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    levels = tmp_path / "levels.json"
    pick = {"first": 0.55, "second": 0.55, "third": 0.65}
    levels.write_text(json.dumps({"picks_by_fold": {str(k): pick for k in range(5)}}))
    out = tmp_path / "r.json"
    sys.argv = ["flag_inputs.py", str(path), "--levels", str(levels), "--out", str(out)]
    module.main()
    report = json.loads(out.read_text())
    assert report["n"] == 200 and report["large_errors"] == 20
    at_10 = {name: c[1] for name, c in report["candidates"].items()}
    # The shipped inputs are all alike: no score rises above the cut, nothing is flagged.
    assert at_10["shipped"] == {"share": 0.1, "flagged": 0.0, "caught": 0.0}
    # With the flip disagreement, the 10 % flagged are the 20 large errors.
    assert at_10["shipped + flip"] == {"share": 0.1, "flagged": 0.1, "caught": 1.0}
