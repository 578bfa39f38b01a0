"""benchmarks/join_predictions.py: the HCs of several weights side by side."""

import math
from pathlib import Path

from conftest import load_benchmark

HEADER = "filename,frame,hc_mm,qc\n"


def write(path: Path, rows: str) -> Path:
    path.write_text(HEADER + rows)
    return path


def test_moves_losses_and_gains_against_the_reference(tmp_path: Path) -> None:
    module = load_benchmark("join_predictions")
    ref = module.read_hc(
        write(
            tmp_path / "a.csv",
            "a.png,0,100.0,ok\nb.png,0,200.0,ok\nc.png,0,,no_head_found\n"
            "d.png,0,150.0,ok\nmulti.dcm,0,90.0,ok\nmulti.dcm,1,300.0,ok\n",
        )
    )
    other = module.read_hc(
        write(
            tmp_path / "b.csv",
            "a.png,0,104.9,ok\nb.png,0,206.0,uncertain_hc\n"
            "c.png,0,80.0,ok\nd.png,0,,no_head_found\nmulti.dcm,0,90.0,ok\n",
        )
    )
    # Only the first frame of a multi-frame file is read.
    assert ref["multi.dcm"] == (90.0, "ok")
    assert math.isnan(ref["c.png"][0])
    far, lost, gained = module.moved(ref, other, 5.0)
    assert far == [("b.png", 200.0, 206.0)]  # a.png moved 4.9 mm, under the threshold
    assert lost == ["d.png"]
    assert gained == ["c.png"]
