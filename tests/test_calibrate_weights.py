"""scripts/calibrate_weights.py reads the held-out rows back from cv_report's per_image.csv."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from fetalhead.uncertainty import fit_interval

SCRIPT = Path(__file__).parents[1] / "scripts" / "calibrate_weights.py"


def load_script():
    spec = importlib.util.spec_from_file_location("calibrate_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_close(got: object, want: object, path: str = "") -> None:
    """Nested dicts and lists equal in keys, strings and lengths; numbers to a relative 1e-9."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), path
        for k in want:
            assert_close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), path
    else:
        assert got == want, path


def heldout_rows() -> list[dict]:
    """Rows as cv_report.per_image makes them: 30 a band, relative errors 0.2 % .. 6 %."""
    rows = []
    for fold, hc in enumerate((80.0, 200.0, 300.0)):
        for i in range(1, 31):
            rows.append(
                {
                    "filename": f"{fold}{i:02d}_HC.png",
                    "fold": fold,
                    "plain_hc_mm": hc,
                    "hc_ref_mm": hc * (1 - 0.002 * i),
                    "rel_rms": 0.01 * (1 + i % 3),
                    "border": float(i % 7 == 0),
                    "plain_qc": "ok",
                }
            )
    # A held-out image where no head was found: no HC and no difficulty scores.
    rows.append({"filename": "999_HC.png", "fold": 2, "hc_ref_mm": 150.0, "plain_qc": "x"})
    return rows


def write_per_image_csv(rows: list[dict], path: Path) -> None:
    """As benchmarks/cv_report.py writes it: the union of keys, empty where a row has none."""
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def test_per_image_csv_round_trip(tmp_path) -> None:
    script = load_script()
    rows = heldout_rows()
    write_per_image_csv(rows, tmp_path / "per_image.csv")
    back, folds = script.read_heldout_rows(tmp_path / "per_image.csv", 0.6)
    assert folds == ["fold0", "fold1", "fold2"]
    assert back[0]["fold"] == 0 and back[0]["plain_hc_mm"] == 80.0
    assert back[0]["plain_qc"] == "ok"
    # Empty cells leave their keys out, as in the cached JSON rows.
    assert "rel_rms" not in back[-1] and "plain_hc_mm" not in back[-1]
    assert back == rows
    assert fit_interval(back, 0.9) == fit_interval(rows, 0.9)


def test_runs_folder_and_csv_give_the_same_rows(tmp_path) -> None:
    script = load_script()
    rows = heldout_rows()
    for fold in (0, 1, 2):
        d = tmp_path / "runs" / f"fold{fold}"
        d.mkdir(parents=True)
        (d / "heldout_rows_level0.6.json").write_text(
            json.dumps([r for r in rows if r["fold"] == fold])
        )
    write_per_image_csv(rows, tmp_path / "per_image.csv")
    from_runs, folds_runs = script.read_heldout_rows(tmp_path / "runs", 0.6)
    from_csv, folds_csv = script.read_heldout_rows(tmp_path / "per_image.csv", 0.6)
    assert folds_runs == folds_csv == ["fold0", "fold1", "fold2"]
    key = lambda r: r["filename"]  # noqa: E731
    assert sorted(from_runs, key=key) == sorted(from_csv, key=key)
    # Another boundary level has no cached rows.
    assert script.read_heldout_rows(tmp_path / "runs", 0.5) == ([], [])


def test_shipped_calibration_is_reproduced_from_the_committed_csv() -> None:
    """The shipped recipe's committed held-out rows give back the weights' interval model."""
    script = load_script()
    from fetalhead.model import Checkpoint
    from fetalhead.predict import DEFAULT_WEIGHTS
    from fetalhead.uncertainty import band_of

    csv_path = (
        Path(__file__).parents[1] / "benchmarks" / "results" / "shipped_cv5" / "per_image.csv"
    )
    rows, folds = script.read_heldout_rows(csv_path, 0.6)
    assert folds == [f"fold{k}" for k in range(5)] and len(rows) == 904
    for r in rows:
        if "plain_hc_mm" in r:
            r["band"] = band_of(r["plain_hc_mm"])
    stored = Checkpoint.load(DEFAULT_WEIGHTS).meta["calibration"]["hc_interval"]
    by_level = {d["level"]: d for d in stored}
    # Equal to 1e-9: another CPU's BLAS may round the last digit of a least-squares fit
    # differently (seen on the CI machine), which is not a different calibration.
    assert_close(fit_interval(rows, 0.9, scale="learned").to_dict(), by_level[0.9])
