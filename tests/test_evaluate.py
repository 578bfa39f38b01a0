import json

import cv2
import numpy as np
import pytest

from conftest import MINI, TINY, OracleBackend
from fetalhead.cli import main
from fetalhead.data import find_cases, label_ellipse
from fetalhead.evaluate import evaluate, hausdorff_ellipses
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import trimester
from fetalhead.measure import Measurement
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_gray
from fetalhead.write.overlay import draw_overlay


def test_hausdorff_of_concentric_circles() -> None:
    assert hausdorff_ellipses(Ellipse(0, 0, 10, 10, 0), Ellipse(0, 0, 12, 12, 0)) == pytest.approx(
        2.0, abs=1e-3
    )
    assert hausdorff_ellipses(Ellipse(0, 0, 10, 5, 0), Ellipse(3, 0, 10, 5, 0)) == pytest.approx(
        3.0, abs=0.01
    )


def test_trimester_bounds() -> None:
    assert [trimester(w) for w in (13.9, 14.0, 27.9, 28.0)] == [
        "first",
        "second",
        "second",
        "third",
    ]


def test_evaluate_with_perfect_maps(tmp_path) -> None:
    cases = find_cases(MINI)
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    m.backend = OracleBackend(
        [label_ellipse(c) for c in cases], [read_gray(c.image).shape for c in cases], TINY
    )
    s = evaluate(m, MINI, tmp_path, split="all", progress=False)
    assert s["n_images"] == 3 and s["n_no_head"] == 0
    assert s["dsc"]["mean"] > 0.985
    assert s["adf_mm"]["mean"] < 1.5 and s["hd_mm"]["mean"] < 1.5
    assert {k: v["n"] for k, v in s["adf_by_trimester"].items()} == {
        "first": 1,
        "second": 1,
        "third": 1,
    }
    for name in ("metrics.csv", "summary.md", "summary.json"):
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "worst").glob("*.png"))) == 3
    assert "By trimester" in (tmp_path / "summary.md").read_text()


def test_overlay_draws_the_reference_ellipse_in_red() -> None:
    case = find_cases(MINI)[0]
    img = read_gray(case.image)
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    ref = label_ellipse(case)
    m.backend = OracleBackend([ref], [img.shape], TINY)
    measurement = m.measure(img, case.pixel_size_mm)
    shifted = Ellipse(ref.cx + 25, ref.cy, ref.a, ref.b, ref.angle)  # clear of the fit
    bgr = draw_overlay(img, measurement, shifted)
    red = (bgr[..., 2] > 200) & (bgr[..., 1] < 120) & (bgr[..., 0] < 120)
    outline = np.zeros(img.shape, np.uint8)
    cv2.ellipse(
        outline,
        (round(shifted.cx), round(shifted.cy)),
        (round(shifted.a), round(shifted.b)),
        np.degrees(shifted.angle),
        0,
        360,
        255,
        5,
    )
    assert red.sum() > 2 * (shifted.a + shifted.b)  # most of the outline is visible
    assert (red & (outline > 0)).sum() > 0.9 * red.sum()
    assert not (draw_overlay(img, measurement)[red] == bgr[red]).all()


def test_overlay_text_halo_hugs_its_letters() -> None:
    """The dark halo ends within two pixels of the white text on every line.

    A halo drawn as thicker text advances each glyph further and drifts right of the
    letters along the line (ghost characters at the end of long lines).
    """
    m = Measurement(filename="x.png", image_shape=(270, 400), qc="ok")
    m.qc = "touches_border;uncertain_hc;low_confidence"  # a long line
    bgr = draw_overlay(np.full((270, 400), 128, np.uint8), m)
    for top, bottom in ((4, 28), (28, 52)):  # the two lines: file name, qc
        band = bgr[top:bottom, :, 0]
        white = np.flatnonzero((band > 200).any(axis=0))
        dark = np.flatnonzero((band < 60).any(axis=0))
        assert white.size and dark.size
        assert dark.max() - white.max() <= 2 and white.min() - dark.min() <= 2


def evaluate_cli(weights, out, *extra: str) -> int:
    return main(
        [
            "evaluate",
            str(MINI),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--backend",
            "torch",
            *extra,
        ]
    )


def test_cli_evaluate_tiny_model(tiny_checkpoint, tmp_path, capsys, monkeypatch) -> None:
    from fetalhead.infer import backends

    # Even where predict's auto backend would be bfloat16, evaluate's is float32.
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    ev = tmp_path / "ev"
    rc = evaluate_cli(tiny_checkpoint, ev, "--split", "all", "--no-progress", "--backend", "auto")
    assert rc == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["model"]["backend"] == backends.float32_backend()
    rows = (tmp_path / "ev" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("filename,pixel_size_mm,hc_ref_mm,hc_pred_mm,df_mm,adf_mm,dsc,hd_mm")
    assert len(rows) == 4
    assert "DSC (%)" in capsys.readouterr().out


def test_cli_evaluate_val_split_needs_recorded_split(tiny_checkpoint, tmp_path, capsys) -> None:
    rc = evaluate_cli(tiny_checkpoint, tmp_path / "ev")
    assert rc == 2 and "--split all" in capsys.readouterr().err


def test_evaluate_scores_a_predictions_file_without_a_model(tmp_path) -> None:
    from fetalhead.data import label_ellipse

    # A predictions.csv holding the reference ellipses themselves scores perfectly.
    rows = [
        "filename,frame,center_x_mm,center_y_mm,semi_axes_a_mm,semi_axes_b_mm,angle_rad,"
        "pixel_size_mm,qc"
    ]
    for c in find_cases(MINI):
        e, px = label_ellipse(c), c.pixel_size_mm
        rows.append(
            f"{c.image.name},,{e.cx * px},{e.cy * px},{e.a * px},{e.b * px},{e.angle},{px},ok"
        )
    (tmp_path / "p.csv").write_text("\n".join(rows[:3]) + "\n")  # 788 left out
    from fetalhead.cli import main

    rc = main(
        [
            "evaluate",
            str(MINI),
            "--predictions",
            str(tmp_path / "p.csv"),
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert rc == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert s["n_images"] == 2 and s["skipped"]["no_prediction"] == ["788_2HC.png"]
    assert s["adf_mm"]["mean"] < 0.05 and s["dsc"]["mean"] > 0.999 and s["hd_mm"]["mean"] < 0.05
