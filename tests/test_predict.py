import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (
    EXAMPLES,
    FINE_CONFIG,
    MINI,
    TINY,
    OracleBackend,
    RingBackend,
    predict_cli,
    synthetic_scan,
)
from fetalhead.batch import collect_inputs
from fetalhead.cli import _print_table, main
from fetalhead.data import find_cases, label_ellipse
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.infer.hardware import bf16_supported
from fetalhead.measure import PREDICTION_COLUMNS
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer, NoWeightsError
from fetalhead.readers import read_gray

REQUIRED = [
    "filename",
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "ga_weeks_hadlock",
    "ga_weeks_intergrowth",
    "qc",
]


def oracle_measurer(ellipses, shapes, meta: dict | None = None, **kw) -> HeadMeasurer:
    # These tests are about geometry on maps of known ellipses, often over blank images,
    # which the non-head check would rightly reject: it is tested in test_plausibility.py.
    kw.setdefault("reject_non_heads", False)
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY), meta), backend="torch", **kw)
    m.backend = OracleBackend(ellipses, shapes, TINY)
    return m


@pytest.mark.parametrize("method", ["lowres", "full"])
def test_oracle_pipeline_reproduces_reference_hc(method) -> None:
    """With a perfect probability map, the post-processing recovers the reference HC."""
    cases = find_cases(MINI)
    imgs = [read_gray(c.image) for c in cases]
    ells = [label_ellipse(c) for c in cases]
    m = oracle_measurer(ells, [i.shape for i in imgs], postprocess=method)
    for case, img in zip(cases, imgs, strict=True):
        r = m.measure(img, case.pixel_size_mm, filename=case.image.name)
        assert r.qc == "ok", r.qc
        # 64x96 is a coarse network grid; the reference model runs at 192x288.
        assert r.hc_mm == pytest.approx(case.hc_mm, rel=0.01)
        assert r.bpd_mm <= r.ofd_mm
        assert r.ga_hadlock is not None and r.ga_intergrowth is not None
        assert r.mask is not None and r.mask.shape == img.shape


def test_measure_accepts_paths_arrays_and_rgb() -> None:
    e = Ellipse(200, 135, 80, 60, 0.3)
    img, _ = synthetic_scan(e)
    m = oracle_measurer([e, e], [img.shape, img.shape])
    r1 = m.measure(img, 0.1)
    r2 = m.measure(np.stack([img] * 3, axis=-1), 0.1)
    assert r1.hc_mm == pytest.approx(r2.hc_mm)
    assert r1.hc_mm == pytest.approx(e.perimeter * 0.1, rel=0.01)
    assert r1.pixel_size_source == "cli"


def test_no_head_gives_empty_measures() -> None:
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    m.backend = lambda batch: np.zeros((len(batch), *TINY.input_hw), np.float32)
    r = m.measure(np.zeros((270, 400), np.uint8), 0.1)
    assert r.qc == "no_head_found"
    assert r.ellipse is None and r.hc_mm is None and r.ga_hadlock is None
    row = r.to_row()
    assert row["center_x_mm"] is None and row["hc_mm"] is None


def test_border_touching_head_is_flagged() -> None:
    e = Ellipse(10, 135, 120, 90, 0.0)
    m = oracle_measurer([e], [(270, 400)])
    r = m.measure(np.zeros((270, 400), np.uint8), 0.1)
    assert "touches_border" in r.qc


def test_missing_default_weights_explain_training(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("fetalhead.predict.DEFAULT_WEIGHTS", tmp_path / "none.pt")
    with pytest.raises(NoWeightsError, match="fetalhead train"):
        HeadMeasurer.from_pretrained()


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_predict_end_to_end_with_tiny_model(tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    rc = predict_cli(
        [MINI],
        out,
        tiny_checkpoint,
        "--pixel-size-csv",
        str(MINI / "pixel_size_and_HC.csv"),
        "--overlays",
        "--save-masks",
        "--submission",
        str(out / "submission.csv"),
        "--backend",
        "torch",
    )
    assert rc == 0
    rows = read_rows(out / "predictions.csv")
    assert [r["filename"] for r in rows] == ["052_HC.png", "433_HC.png", "788_2HC.png"]
    assert set(REQUIRED) <= set(rows[0]) and list(rows[0]) == PREDICTION_COLUMNS
    for r in rows:
        assert r["qc"] in {"ok", "no_head_found"} or set(r["qc"].split(";")) <= {
            "low_confidence",
            "touches_border",
        }
        assert (r["hc_mm"] == "") == (r["qc"] == "no_head_found")
    assert len(list((out / "overlays").glob("*.png"))) == 3
    record = json.loads((out / "run.json").read_text())
    assert len(record["model"]["weights_sha256"]) == 64 and record["torch"]
    sub = read_rows(out / "submission.csv")
    assert list(sub[0]) == REQUIRED[:6] and len(sub) == 3
    assert "HC mm" in capsys.readouterr().out


def test_printed_table_shows_ga_as_weeks_and_days(capsys) -> None:
    row = {"filename": "a.png", "frame": None, "hc_mm": 200.0, "bpd_mm": 50.0, "ofd_mm": 70.0,
           "ga_weeks_hadlock": 22.16, "ga_weeks_hadlock_2sd_low": 20.39,
           "ga_weeks_hadlock_2sd_high": 24.92, "qc": "ok"}  # fmt: skip
    empty = {**row, "filename": "b.png", "hc_mm": None, "bpd_mm": None, "ofd_mm": None,
             "ga_weeks_hadlock": None, "ga_weeks_hadlock_2sd_low": None,
             "ga_weeks_hadlock_2sd_high": None, "qc": "no_head_found"}  # fmt: skip
    _print_table([row, empty])
    lines = capsys.readouterr().out.splitlines()
    # 22.16 weeks = 155.1 days = 22w1d; 20.39 -> 20w3d, 24.92 -> 24w6d.
    assert lines[2].split() == ["a.png", "200.0", "50.0", "70.0", "22w1d", "20w3d-24w6d", "ok"]
    assert lines[3].split() == ["b.png", "-", "-", "-", "-", "-", "no_head_found"]


def test_cli_skips_label_files_and_needs_pixel_size(tiny_checkpoint, tmp_path, capsys) -> None:
    assert [f.name for f in collect_inputs([MINI])] == ["052_HC.png", "433_HC.png", "788_2HC.png"]
    rc = predict_cli([MINI / "052_HC.png"], tmp_path / "o", tiny_checkpoint)
    assert rc == 1  # nothing could be measured
    rows = read_rows(tmp_path / "o" / "predictions.csv")
    assert rows[0]["qc"] == "no_pixel_size" and "052_HC.png: no pixel size" in rows[0]["error"]


def test_batch_goes_on_after_bad_files(tiny_checkpoint, tmp_path, caplog) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "001_HC.png").write_bytes((EXAMPLES / "054_HC.png").read_bytes())
    (src / "002_HC.png").write_bytes(b"")
    (src / "003_HC.png").write_bytes(b"not an image at all")
    (src / "004_HC.png").write_bytes((EXAMPLES / "054_HC.png").read_bytes()[:3000])
    rc = predict_cli([src], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1")
    assert rc == 0
    rows = {r["filename"]: r for r in read_rows(tmp_path / "o" / "predictions.csv")}
    assert rows["001_HC.png"]["qc"] != "unreadable"
    for name in ("002_HC.png", "003_HC.png", "004_HC.png"):
        assert rows[name]["qc"] == "unreadable" and name in rows[name]["error"]
    assert "002_HC.png: file is empty" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pixel-size", "-1"], "--pixel-size: pixel size must be a positive"),
        (["--pixel-size", "0"], "positive"),
        (["--pixel-size-csv", "nope.csv"], "nope.csv: cannot read"),
        (["--pixel-size", "0.1", "--processes", "0"], "--processes must be at least 1"),
    ],
)
def test_cli_bad_options_are_one_line_errors(tiny_checkpoint, tmp_path, capsys, args, message):
    rc = predict_cli([MINI], tmp_path / "o", tiny_checkpoint, *args)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


def test_empty_folder_and_existing_output(tiny_checkpoint, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        predict_cli([tmp_path / "empty"], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1")
        == 2
    )
    assert "no images found" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    assert predict_cli([MINI], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1") == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "o" / "keep.txt").read_text() == "x"


def test_output_inside_input_is_refused(tiny_checkpoint, tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((64, 64), np.uint8))
    assert predict_cli([tmp_path], src, tiny_checkpoint, "--pixel-size", "0.1") == 2
    assert "contains the input" in capsys.readouterr().err


def test_names_with_spaces_unicode_and_symlink_loops(tiny_checkpoint, tmp_path) -> None:
    src = tmp_path / "scans ümlaut"
    (src / "sub dir").mkdir(parents=True)
    (src / "sub dir" / "kopf 1 é.png").write_bytes((EXAMPLES / "054_HC.png").read_bytes())
    os.symlink(src, src / "sub dir" / "loop")
    files = collect_inputs([src])
    assert [f.name for f in files] == ["sub dir/kopf 1 é.png"]
    assert predict_cli([src], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1") == 0


def test_predict_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for opt in (
        "--out",
        "--pixel-size",
        "--pixel-size-csv",
        "--weights",
        "--save-masks",
        "--overlays",
        "--tta",
        "--submission",
        "--resume",
        "--backend",
        "--compile",
    ):
        assert opt in text


def test_missing_input_path(tiny_checkpoint, tmp_path, capsys) -> None:
    with pytest.raises(InputError, match="nothing.png: no such file"):
        collect_inputs([tmp_path / "nothing.png"])


@pytest.mark.parametrize("shape", [(40, 60), (150, 200), (2000, 3000), (540, 4000)])
def test_images_far_from_800x540(tiny_checkpoint, tmp_path, shape) -> None:
    src = tmp_path / "in"
    src.mkdir()
    e = Ellipse(shape[1] / 2, shape[0] / 2, shape[1] / 5, shape[0] / 5, 0.2)
    img, _ = synthetic_scan(e, shape)
    cv2.imwrite(str(src / "odd.png"), img)
    assert predict_cli([src], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1") == 0
    row = read_rows(tmp_path / "o" / "predictions.csv")[0]
    assert row["qc"] and row["qc"] != "unreadable"


def test_backend_names_are_checked_and_match_the_cli(monkeypatch) -> None:
    from typing import get_args

    from fetalhead import cli
    from fetalhead.infer import backends

    assert cli.BACKENDS == get_args(backends.BackendName)
    ck = Checkpoint.from_model(ResUNet(TINY))
    with pytest.raises(ValueError, match="backend must be one of"):
        HeadMeasurer(ck, backend="tensorrt")  # type: ignore[arg-type]
    monkeypatch.setattr(backends, "bf16_supported", lambda: False)
    with pytest.raises(RuntimeError, match="bfloat16"):
        HeadMeasurer(ck, backend="torch-bf16")


@pytest.mark.skipif(not bf16_supported(), reason="no bf16")
def test_bf16_backend_agrees_with_float32_on_real_images() -> None:
    from fetalhead.predict import DEFAULT_WEIGHTS

    images = sorted(EXAMPLES.glob("*_HC.png"))
    px = {
        r["filename"]: float(r["pixel size(mm)"])
        for r in csv.DictReader(open(EXAMPLES / "pixel_size.csv"))
    }
    imgs, sizes, names = (
        [read_gray(p) for p in images],
        [px[p.name] for p in images],
        [p.name for p in images],
    )
    ref = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch").measure_batch(
        imgs, sizes, names
    )
    bf16 = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch-bf16")
    assert bf16.backend_name == "torch-bf16"
    for a, b in zip(ref, bf16.measure_batch(imgs, sizes, names), strict=True):
        assert a.qc == b.qc
        assert a.hc_mm is not None and abs(a.hc_mm - b.hc_mm) < 0.1, a.filename


def test_compiled_torch_backend_matches_eager_and_pads_small_batches() -> None:
    from fetalhead.infer.backends import TorchBackend

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ck = Checkpoint.from_model(ResUNet(TINY))
    x = np.random.default_rng(0).random((3, 1, *TINY.input_hw), dtype=np.float32)
    eager = TorchBackend(ck)(x)
    compiled = TorchBackend(ck, compile=True)
    assert compiled.name == "torch+compile"
    np.testing.assert_allclose(compiled(x), eager, atol=1e-4)
    # A smaller last batch is padded to the compiled size, not recompiled.
    np.testing.assert_allclose(compiled(x[:2]), eager[:2], atol=1e-4)
    assert compiled._compiled is not None and compiled._compiled_batch == 3


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog) -> None:
    from fetalhead.infer.backends import TorchBackend

    torch = pytest.importorskip("torch")

    def broken(*_args, **_kw):
        def run(_x):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    ck = Checkpoint.from_model(ResUNet(TINY))
    x = np.random.default_rng(0).random((2, 1, *TINY.input_hw), dtype=np.float32)
    backend = TorchBackend(ck, compile=True)
    np.testing.assert_allclose(backend(x), TorchBackend(ck)(x), atol=1e-5)
    assert "torch.compile failed" in caplog.text and backend._compiled is None
    with pytest.raises(ValueError, match="not to onnx"):
        HeadMeasurer(ck, backend="onnx", compile=True)


@pytest.mark.parametrize(("flag", "expected"), [((), True), (("--no-tta",), False)])
def test_tta_follows_the_weights_unless_told(tmp_path, flag, expected) -> None:
    ck = Checkpoint.from_model(ResUNet(TINY), {"inference": {"tta": True}})
    assert HeadMeasurer(ck, backend="torch").tta is True
    assert HeadMeasurer(ck, backend="torch", tta=False).tta is False
    assert HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch").tta is False
    ck.save(tmp_path / "tta.pt")
    image = synthetic_scan(Ellipse(200, 135, 120, 90, 0.3))[0]
    cv2.imwrite(str(tmp_path / "a_HC.png"), image)
    out = tmp_path / "out"
    assert (
        predict_cli([tmp_path / "a_HC.png"], out, tmp_path / "tta.pt", "--pixel-size", "0.1", *flag)
        == 0
    )
    assert json.loads((out / "run.json").read_text())["model"]["tta"] is expected


def test_ellipse_fit_ignores_a_blurred_outward_wall() -> None:
    """A faint lateral wall (shallow, shifted outwards) must not inflate HC."""
    from fetalhead import predict
    from fetalhead.geometry.ellipse import find_head_contour, fit_ellipse
    from fetalhead.geometry.letterbox import Letterbox

    h, w = 192, 288
    true = Ellipse(144.0, 96.0, 100.0, 70.0, 0.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - true.cx) / true.a, (yy - true.cy) / true.b)
    dist = (r - 1.0) * 85.0  # about the distance to the boundary, in pixels
    sharp = np.clip(0.5 - dist / 1.0, 0.0, 1.0)
    faint = np.clip(0.5 - (dist - 4.0) / 12.0, 0.0, 1.0)  # 4 px out, 12 px wide
    # The faint wall covers the right-hand eighth of the boundary.
    prob = np.where(xx > true.cx + 0.85 * true.a, faint, sharp).astype(np.float32)
    e, _, _, _ = predict.postprocess(prob, Letterbox(h, w, h, w), "full")
    unweighted = fit_ellipse(find_head_contour(prob)[0]).ellipse
    assert abs(e.perimeter - true.perimeter) < 0.5 < abs(unweighted.perimeter - true.perimeter)


def test_worker_processes_write_the_same_rows_in_order(tiny_checkpoint, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(11):
        img, _ = synthetic_scan(Ellipse(200, 135, 60 + 3 * i, 45, 0.2 * i), seed=i)
        cv2.imwrite(str(src / f"{i:03d}_HC.png"), img)
    (src / "005_bad_HC.png").write_bytes(b"not an image")
    common = ["--pixel-size", "0.1", "--backend", "torch", "--batch-size", "3", "--overlays"]
    assert predict_cli([src], tmp_path / "one", tiny_checkpoint, *common, "--processes", "1") == 0
    assert predict_cli([src], tmp_path / "two", tiny_checkpoint, *common, "--processes", "2") == 0
    one = read_rows(tmp_path / "one" / "predictions.csv")
    two = read_rows(tmp_path / "two" / "predictions.csv")
    assert [r["filename"] for r in two] == sorted(p.name for p in src.iterdir())
    assert two == one
    assert next(r for r in two if r["filename"] == "005_bad_HC.png")["qc"] == "unreadable"
    assert len(list((tmp_path / "two" / "overlays").iterdir())) == 11
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["options"]["processes"] == 2


def test_default_processes(monkeypatch) -> None:
    from fetalhead import batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    assert batch.default_processes("torch-bf16", 1000) == 2
    assert batch.default_processes("torch", batch.MIN_FILES_FOR_PROCESSES - 1) == 1
    assert batch.default_processes("onnx", 1000) == 1
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 1)
    assert batch.default_processes("torch", 1000) == 1


def test_lowres_postprocess_agrees_with_full_on_real_images() -> None:
    """The network-resolution contour gives the full-resolution HC to within 0.1 mm."""
    from fetalhead.infer.backends import preprocess
    from fetalhead.postprocess import postprocess
    from fetalhead.predict import DEFAULT_WEIGHTS

    m = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch", tta=False)
    px = {
        r["filename"]: float(r["pixel size(mm)"])
        for r in csv.DictReader(open(EXAMPLES / "pixel_size.csv"))
    }
    for name, size in px.items():
        x, lb = preprocess(read_gray(EXAMPLES / name), m.config)
        prob = m._probabilities(x[None, None])[0]
        full, _, _, qc_full = postprocess(prob, lb, "full")
        low, _, _, qc_low = postprocess(prob, lb, "lowres")
        assert qc_low == qc_full, name
        assert abs(full.perimeter - low.perimeter) * size < 0.1, name


def test_auto_backend_is_bf16_only_where_the_cpu_has_it(monkeypatch) -> None:
    from fetalhead.infer import backends

    ck = Checkpoint.from_model(ResUNet(TINY))
    # As on a CPU with AVX512-BF16, whatever this one has (CI's may have AVX2 only).
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    monkeypatch.setattr(backends, "bf16_supported", lambda: True)
    assert HeadMeasurer(ck, backend="auto").backend_name == "torch-bf16"
    monkeypatch.setattr(backends, "native_bf16", lambda: False)
    assert HeadMeasurer(ck, backend="auto").backend_name in ("onnx", "torch")


#: Reference HC of the bundled labelled images (HC18 training CSV, van den Heuvel et al.).
MINI_REFERENCE_HC_MM = {"052_HC.png": 71.91, "433_HC.png": 173.3, "788_2HC.png": 312.49}


def test_shipped_weights_reproduce_the_reference_hc_of_labelled_images() -> None:
    from fetalhead.predict import DEFAULT_WEIGHTS

    # Tolerance: 3 mm or 4 % of the reference, whichever is larger. The shipped model's
    # mean error is about 2 mm; third-trimester heads (788_2HC) run several mm large.
    m = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch", tta=False)
    for c in find_cases(MINI):
        r = m.measure(c.image, c.pixel_size_mm)
        ref = MINI_REFERENCE_HC_MM[c.image.name]
        assert abs(r.hc_mm - ref) <= max(3.0, 0.04 * ref), (c.image.name, r.hc_mm, ref)
        # Whole, clear heads: nothing but the calibrated flag may doubt them.
        assert r.bpd_mm < r.ofd_mm and r.qc in ("ok", "uncertain_hc")
        assert r.hc_low_mm < r.hc_mm < r.hc_high_mm


def test_weights_choose_the_boundary_level() -> None:
    e = Ellipse(200, 135, 90, 70, 0.4)
    hc = {}
    for level in (0.5, 0.6):
        ck = Checkpoint.from_model(ResUNet(TINY), {"inference": {"level": level}})
        m = HeadMeasurer(ck, backend="torch", tta=False, reject_non_heads=False)
        m.backend = OracleBackend([e], [(270, 400)], TINY)
        hc[level] = m.measure(np.zeros((270, 400), np.uint8), 0.1).hc_mm
        assert m.describe()["boundary_level"] == level
    # A higher iso-level lies inside the soft edge of the map: a smaller head.
    assert hc[0.6] < hc[0.5]


class _CountingRing:
    """The ring-segmenting backend of conftest, counting the images it is given."""

    name = "ring"

    def __init__(self, second_pass=None) -> None:
        self.ring, self.second_pass, self.calls, self.images = RingBackend(), second_pass, 0, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(batch)
        if self.calls == 2 and self.second_pass is not None:
            return self.second_pass(batch)
        return self.ring(batch)


def ring_measurer(backend, refine: bool) -> HeadMeasurer:
    m = HeadMeasurer(
        Checkpoint.from_model(ResUNet(FINE_CONFIG)),
        backend="torch",
        refine=refine,
        reject_non_heads=False,
    )
    m.backend = backend
    return m


def test_refine_measures_a_small_head_on_finer_pixels() -> None:
    """A small head, 80 x 56 px in 540 x 800: the crop gives it 6 times the network pixels."""
    e = Ellipse(500, 300, 40, 28, 0.4)
    img, _ = synthetic_scan(e, (540, 800))
    truth = e.perimeter * 0.1
    one = ring_measurer(_CountingRing(), refine=False).measure(img, 0.1)
    backend = _CountingRing()
    two = ring_measurer(backend, refine=True).measure(img, 0.1)
    assert backend.calls == 2 and backend.images == 2
    assert two.qc == one.qc == "ok"
    assert abs(two.hc_mm - truth) < 0.5 * abs(one.hc_mm - truth)
    assert two.hc_mm == pytest.approx(truth, rel=0.01)
    # Centre and axes are back in the image's pixels.
    assert (two.ellipse.cx, two.ellipse.cy) == pytest.approx((500, 300), abs=1.0)


def test_refining_a_one_pass_result_gives_the_two_pass_one_with_one_more_pass() -> None:
    e = Ellipse(500, 300, 40, 28, 0.4)
    img, _ = synthetic_scan(e, (540, 800))
    two = ring_measurer(_CountingRing(), refine=True).measure(img, 0.1)
    backend = _CountingRing()
    measurer = ring_measurer(backend, refine=False)
    result = measurer.measure_batch([img], [0.1])
    first = result[0].ellipse
    measurer.refine_in_place([img], result)
    # One network pass for the whole image, one for the crop: the first is not rerun.
    assert backend.calls == 2 and backend.images == 2
    assert result[0].ellipse == two.ellipse != first
    assert result[0].hc_mm == two.hc_mm


def test_refine_skips_heads_that_fill_the_image() -> None:
    e = Ellipse(400, 270, 300, 220, 0.0)
    img, _ = synthetic_scan(e, (540, 800))
    backend = _CountingRing()
    r = ring_measurer(backend, refine=True).measure(img, 0.1)
    assert backend.calls == 1 and r.qc == "ok"


def test_refine_keeps_the_first_ellipse_if_the_crop_cuts_the_head() -> None:
    """A second pass whose head runs into the crop's sides inside the image is not used."""
    e = Ellipse(500, 300, 40, 28, 0.4)
    img, _ = synthetic_scan(e, (540, 800))
    one = ring_measurer(_CountingRing(), refine=False).measure(img, 0.1)
    everything = _CountingRing(second_pass=lambda b: np.ones((len(b), *b.shape[2:]), np.float32))
    two = ring_measurer(everything, refine=True).measure(img, 0.1)
    assert everything.calls == 2
    assert two.ellipse == one.ellipse and two.hc_mm == one.hc_mm


def test_refine_follows_the_weights_unless_told(tmp_path) -> None:
    ck = Checkpoint.from_model(ResUNet(TINY), {"inference": {"refine": True}})
    assert HeadMeasurer(ck, backend="torch").refine is True
    assert HeadMeasurer(ck, backend="torch", refine=False).refine is False
    assert HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch").refine is False
    assert HeadMeasurer(ck, backend="torch").describe()["refine"] is True


def ramp_measurer(meta: dict) -> HeadMeasurer:
    """Its backend returns a circle (radius 150 px in 540 x 800) whose probability falls
    linearly from 1 to 0 over 4 network pixels, so the level-P contour lies
    (0.5 - P) * 4 network pixels inside the circle's edge."""
    from fetalhead.geometry.letterbox import Letterbox

    lb = Letterbox(540, 800, *FINE_CONFIG.input_hw)
    c = lb.ellipse_to_net(Ellipse(400, 270, 150, 150, 0.0))
    yy, xx = np.mgrid[0:192, 0:288]
    prob = np.clip(0.5 - (np.hypot(xx - c.cx, yy - c.cy) - c.a) / 4.0, 0, 1).astype(np.float32)
    m = HeadMeasurer(
        Checkpoint.from_model(ResUNet(FINE_CONFIG), meta), backend="torch", reject_non_heads=False
    )
    m.backend = lambda batch: np.stack([prob] * len(batch))
    return m


@pytest.mark.parametrize(
    ("px", "level"),
    [
        (0.2, 0.55),  # HC 188 mm at P = 0.55: second band, stays at 0.55
        (0.3, 0.65),  # HC 282 mm at P = 0.55: third band, fitted again at 0.65
        (None, 0.6),  # no pixel size, no band: the weights' single level
    ],
)
def test_boundary_level_follows_the_hc_band(px, level) -> None:
    bands = {"first": 0.55, "second": 0.55, "third": 0.65}
    m = ramp_measurer({"inference": {"level": 0.6, "level_by_band": bands}})
    r = m.measure_batch([np.zeros((540, 800), np.uint8)], [px])[0]
    scale = 192 / 540  # network pixels per image pixel
    radius = 150 + (0.5 - level) * 4 / scale
    assert r.ellipse.perimeter == pytest.approx(2 * np.pi * radius, rel=2e-3)
    assert m.describe()["boundary_level_by_band"] == bands


def test_level_by_band_is_checked() -> None:
    with pytest.raises(ValueError, match="each of"):
        ramp_measurer({"inference": {"level_by_band": {"first": 0.5}}})
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        ramp_measurer({"inference": {"level_by_band": {"first": 0.5, "second": 1.5, "third": 0.6}}})


def test_open_ratio_comes_from_the_weights_and_is_checked() -> None:
    # The ramp's single round region: the opening leaves it whole, as without it.
    plain = ramp_measurer({"inference": {"level": 0.5}})
    opened = ramp_measurer({"inference": {"level": 0.5, "open_ratio": 0.5}})
    img = [np.zeros((540, 800), np.uint8)]
    assert opened.describe()["open_ratio"] == 0.5 and plain.describe()["open_ratio"] is None
    e0 = plain.measure_batch(img, [0.2])[0].ellipse
    e1 = opened.measure_batch(img, [0.2])[0].ellipse
    assert e1 == e0
    with pytest.raises(ValueError, match=r"open_ratio must lie in \(0, 1\)"):
        ramp_measurer({"inference": {"open_ratio": 1.5}})


class _ScaleRecorder:
    """The ring backend of conftest, keeping the mm per network pixel it is told."""

    name = "ring"

    def __init__(self) -> None:
        self.ring, self.told = RingBackend(), []

    def __call__(self, batch: np.ndarray, mm_per_pixel: np.ndarray) -> np.ndarray:
        self.told.append(mm_per_pixel.tolist())
        return self.ring(batch)


def test_weights_with_a_scale_input_are_told_mm_per_network_pixel() -> None:
    import dataclasses

    cfg = dataclasses.replace(FINE_CONFIG, scale_input=True)
    m = HeadMeasurer(
        Checkpoint.from_model(ResUNet(cfg)), backend="torch", tta=True, reject_non_heads=False
    )
    m.backend = recorder = _ScaleRecorder()
    img, _ = synthetic_scan(Ellipse(400, 270, 150, 110, 0.3), (540, 800))
    found = m.measure_batch([img, img], [0.1, None])
    # 800x540 letterboxed into 288x192 fills 284x192 of it, so 0.1 mm pixels are
    # 0.1 / sqrt(284/800 * 192/540) = 0.28147 mm network pixels; without a pixel size,
    # the reference 0.38 mm. Both passes of TTA are told the same.
    assert recorder.told == [[pytest.approx(0.28147, abs=1e-5), pytest.approx(0.38)]] * 2
    assert found[0].hc_mm is not None and found[1].hc_mm is None
    with pytest.raises(ValueError, match="pass mm_per_pixel"):
        m._probabilities(np.zeros((1, 1, 192, 288), np.float32))


PRIOR = {
    "first": {"ratio": 0.85, "weight": 0.3},
    "second": {"ratio": 0.8, "weight": 0.5},
    "third": {"ratio": 0.8, "weight": 0.1},
}


def test_shape_prior_draws_the_long_axis_towards_its_band_ratio() -> None:
    # A 120 x 80 px head at 0.3 mm: HC 190 mm, the second band. Its prior (ratio 0.8,
    # weight 0.5) moves the semi-major axis to 0.5 * 120 + 0.5 * 80 / 0.8 = 110 px and
    # keeps the semi-minor one: HC 600.6 px = 180.2 mm (Ramanujan).
    e = Ellipse(200, 135, 120, 80, 0.3)
    img = np.zeros((270, 400), np.uint8)
    meta = {"inference": {"shape_prior": PRIOR}}
    on = oracle_measurer([e, e], [img.shape] * 2, meta)
    off = oracle_measurer([e, e], [img.shape] * 2, meta, shape_prior=False)
    r, plain = on.measure(img, 0.3), off.measure(img, 0.3)
    assert plain.ellipse.major / 2 == pytest.approx(120, rel=0.01)
    assert r.ellipse.major / 2 == pytest.approx(110, rel=0.01)
    assert r.ellipse.minor == plain.ellipse.minor and r.ellipse.angle == plain.ellipse.angle
    assert r.hc_mm == pytest.approx(180.2, rel=0.01)
    # The interval is as calibrated on the fit before the prior: the same relative width.
    assert r.hc_rel_halfwidth == plain.hc_rel_halfwidth
    assert on.describe()["shape_prior"] == {"first": (0.85, 0.3), "second": (0.8, 0.5),
                                            "third": (0.8, 0.1)}  # fmt: skip
    assert off.describe()["shape_prior"] is None
    # Without a pixel size there is no HC band, and no prior.
    assert on.measure(img, None).ellipse == off.measure(img, None).ellipse


def test_shape_prior_is_checked() -> None:
    e, shape = Ellipse(200, 135, 120, 80, 0.3), (270, 400)
    with pytest.raises(ValueError, match="ratio and weight"):
        oracle_measurer([e], [shape], {"inference": {"shape_prior": {"first": PRIOR["first"]}}})
    bad = PRIOR | {"third": {"ratio": 1.2, "weight": 0.1}}
    with pytest.raises(ValueError, match=r"ratio in \(0, 1\]"):
        oracle_measurer([e], [shape], {"inference": {"shape_prior": bad}})
    with pytest.raises(ValueError, match="needs 'ratio' and 'weight'"):
        oracle_measurer([e], [shape], {"inference": {"shape_prior": PRIOR | {"first": {"w": 1}}}})
