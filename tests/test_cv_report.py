"""benchmarks/cv_report.py: rows of folds whose maps are gone join the runs' rows."""

import csv

import pytest

from conftest import load_benchmark


def test_rows_of_other_folds_are_added_and_a_fold_counts_once(tmp_path) -> None:
    module = load_benchmark("cv_report")
    runs = [{"filename": "001_HC.png", "fold": 0, "plain_df_mm": 1.5, "plain_qc": "ok"}]
    committed = tmp_path / "per_image.csv"
    with open(committed, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["filename", "fold", "plain_df_mm", "rel_rms"])
        w.writeheader()
        w.writerow({"filename": "002_HC.png", "fold": 2, "plain_df_mm": -0.25, "rel_rms": ""})
    extra, folds = module.read_per_image_csv(committed)
    assert folds == ["fold2"]
    merged = module.merge_rows(runs, extra, str(committed))
    assert [r["filename"] for r in merged] == ["001_HC.png", "002_HC.png"]
    # Read back as numbers; an empty cell leaves its key out.
    assert merged[1] == {"filename": "002_HC.png", "fold": 2, "plain_df_mm": -0.25}
    with pytest.raises(ValueError, match=r"folds \[2\] are already in the runs"):
        module.merge_rows(merged, extra, str(committed))


def test_one_column_is_read_by_filename_and_a_missing_one_is_named(tmp_path) -> None:
    module = load_benchmark("cv_report")
    table = tmp_path / "per_image.csv"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["filename", "fold", "hc_prior_mm"])
        w.writeheader()
        w.writerow({"filename": "001_HC.png", "fold": 0, "hc_prior_mm": "170.25"})
        w.writerow({"filename": "002_HC.png", "fold": 1, "hc_prior_mm": ""})
    # An empty cell (no head found) leaves the image out.
    assert module.read_column(f"{table}:hc_prior_mm") == {"001_HC.png": 170.25}
    with pytest.raises(ValueError, match="no value in column 'hc_mm'"):
        module.read_column(f"{table}:hc_mm")
    with pytest.raises(ValueError, match="expected CSV:COLUMN"):
        module.read_column(str(table))
