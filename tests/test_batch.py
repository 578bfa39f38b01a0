import csv
import json
import shutil

import pytest

from conftest import EXAMPLES, predict_cli
from fetalhead.batch import InputFile, merge_parts, select_part
from fetalhead.cli import main
from fetalhead.image import InputError
from fetalhead.write.tables import completed_files, submission_names


def test_select_part_deals_every_nth_file() -> None:
    files = [InputFile(EXAMPLES / f"{i}.png", f"{i}.png") for i in range(7)]
    parts = [[f.name for f in select_part(files, 3, k)] for k in range(3)]
    assert parts == [["0.png", "3.png", "6.png"], ["1.png", "4.png"], ["2.png", "5.png"]]
    with pytest.raises(InputError, match="--part-id must be in 0..2"):
        select_part(files, 3, 3)


def test_completed_files_needs_every_frame() -> None:
    rows = [
        {"filename": "a.png", "frame": "", "n_frames": "1"},
        {"filename": "cine.dcm", "frame": "0", "n_frames": "3"},
        {"filename": "cine.dcm", "frame": "1", "n_frames": "3"},
        {"filename": "old.dcm", "frame": "0"},  # a table from before n_frames: redone
        {"filename": "legacy.png", "frame": ""},
    ]
    assert completed_files(rows) == {"a.png", "legacy.png"}
    rows.append({"filename": "cine.dcm", "frame": "2", "n_frames": "3"})
    assert completed_files(rows) == {"a.png", "legacy.png", "cine.dcm"}


def test_submission_names_stay_bare_unless_they_collide() -> None:
    assert submission_names(["x/1.png", "y/2.png", "y/2.png"]) == ["1.png", "2.png", "2.png"]
    assert submission_names(["x/1.png", "y/1.png"]) == ["x/1.png", "y/1.png"]


def test_resume_and_overwrite_exclude_each_other(tmp_path, tiny_checkpoint, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", str(EXAMPLES), "--out", str(tmp_path), "--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_parts_then_merge_equal_one_run(tmp_path, tiny_checkpoint) -> None:
    args = ["--backend", "torch", "--pixel-size-csv", str(EXAMPLES / "pixel_size.csv")]
    assert predict_cli([EXAMPLES], tmp_path / "whole", tiny_checkpoint, *args) == 0
    for k in range(3):
        out = tmp_path / f"part{k}"
        extra = ["--num-parts", "3", "--part-id", str(k)]
        assert predict_cli([EXAMPLES], out, tiny_checkpoint, *args, *extra) == 0
    parts = [tmp_path / f"part{k}" for k in range(3)]
    rc = main(["merge", *map(str, parts), "--out", str(tmp_path / "m")])
    assert rc == 0
    whole = sorted(csv.DictReader(open(tmp_path / "whole" / "predictions.csv")), key=str)
    merged = sorted(csv.DictReader(open(tmp_path / "m" / "predictions.csv")), key=str)
    assert merged == whole
    # A missing part and an unfinished part are refused.
    with pytest.raises(InputError, match=r"parts \[2\] of 3 are missing"):
        merge_parts(parts[:2], tmp_path / "m2")
    shutil.copytree(parts[1], tmp_path / "cut")
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    lines = (tmp_path / "cut" / "predictions.csv").read_text().splitlines(keepends=True)
    (tmp_path / "cut" / "predictions.csv").write_text("".join(lines[:2]))
    assert record["n_inputs"] > 1
    with pytest.raises(InputError, match="unfinished"):
        merge_parts([parts[0], tmp_path / "cut", parts[2]], tmp_path / "m3")


def test_resume_refuses_a_table_with_other_columns(tmp_path, tiny_checkpoint, capsys) -> None:
    # A table written by a version with fewer columns: appending would shift every value.
    out = tmp_path / "o"
    out.mkdir()
    old = "filename,frame,n_frames,hc_mm,qc\n001_HC.png,,1,170,ok\n"
    (out / "predictions.csv").write_text(old)
    args = ["--backend", "torch", "--pixel-size", "0.1", "--resume"]
    assert predict_cli([EXAMPLES / "054_HC.png"], out, tiny_checkpoint, *args) == 2
    err = capsys.readouterr().err
    assert "predictions.csv: its columns are not those this fetalhead writes" in err
    assert "missing: center_x_mm, center_y_mm" in err
    assert (out / "predictions.csv").read_text() == old  # untouched
