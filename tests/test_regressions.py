"""Regression tests for the defects of issue 13; each failed on the code before its fix.

Expected values are written out: the synthetic heads are ellipses of known size.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
from pydicom import examples

from conftest import MINI, RingBackend, predict_cli, synthetic_scan
from fetalhead.data import Case, find_cases
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.model import Checkpoint, ModelConfig, ResUNet
from fetalhead.plausibility import HCFloor
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_image
from test_dicom import make_dicom, region

#: A fine network input, so that the ring backend's HC is within 1 % of the truth.
FINE = ModelConfig(start_filters=2, dropout=0.0, input_hw=(192, 288))


def ring_measurer() -> HeadMeasurer:
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(FINE)), backend="torch", tta=False)
    m.backend = RingBackend()
    return m


# --- 1. Anisotropic DICOM regions -------------------------------------------------------


def two_region_dicom(tmp_path: Path, e: Ellipse, regions: list) -> Path:
    img, _ = synthetic_scan(e, (270, 400))
    return make_dicom(tmp_path / "us.dcm", img, regions)


def test_head_in_an_anisotropic_region_is_measured_with_that_region(tmp_path) -> None:
    # Left: the largest region, square 0.1 mm pixels. Right: 0.2 mm wide, 0.3 mm high.
    # The head, 60 x 50 pixels in semi-axes, lies in the right one, so it is
    # 12 mm x 15 mm: HC = pi (3 (12 + 15) - sqrt((36 + 15) (12 + 45))) = 85.085 mm.
    # Before the fix: HC 69.3 mm (the 0.2 mm width applied to both axes), qc ok.
    e = Ellipse(330, 135, 60, 50, 0.0)
    p = two_region_dicom(
        tmp_path, e, [region(0, 0, 259, 269, 0.01, 0.01), region(260, 0, 399, 269, 0.02, 0.03)]
    )
    r = ring_measurer().measure(read_image(p)[0], filename="us.dcm")
    assert r.hc_mm == pytest.approx(85.085, rel=0.01)
    assert r.bpd_mm == pytest.approx(24.0, rel=0.015) and r.ofd_mm == pytest.approx(30.0, rel=0.015)
    assert r.pixel_size_mm == pytest.approx(0.2) and r.qc == "ok"


def test_cli_row_for_an_anisotropic_region(tmp_path, tiny_checkpoint, monkeypatch) -> None:
    from fetalhead.infer import backends

    e = Ellipse(330, 135, 60, 50, 0.0)
    src = tmp_path / "in"
    src.mkdir()
    two_region_dicom(
        src, e, [region(0, 0, 259, 269, 0.01, 0.01), region(260, 0, 399, 269, 0.02, 0.03)]
    )
    ck = Checkpoint.from_model(ResUNet(FINE))
    ck.save(tmp_path / "fine.pt")
    monkeypatch.setattr(backends, "TorchBackend", lambda *a, **k: RingBackend())
    rc = predict_cli([src], tmp_path / "o", tmp_path / "fine.pt", "--backend", "torch")
    assert rc == 0
    row = next(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))
    assert float(row["hc_mm"]) == pytest.approx(85.085, rel=0.01) and row["qc"] == "ok"


def test_head_across_two_regions_is_flagged(tmp_path) -> None:
    # The head straddles the border at x = 260 between regions of different spacing.
    e = Ellipse(260, 135, 60, 50, 0.0)
    p = two_region_dicom(
        tmp_path, e, [region(0, 0, 259, 269, 0.01, 0.01), region(260, 0, 399, 269, 0.02, 0.03)]
    )
    r = ring_measurer().measure(read_image(p)[0], filename="us.dcm")
    assert "head_crosses_regions" in r.qc.split(";")


def test_overlapping_regions_of_different_spacing_are_flagged(tmp_path) -> None:
    e = Ellipse(200, 135, 60, 50, 0.0)
    p = two_region_dicom(
        tmp_path, e, [region(0, 0, 399, 269, 0.01, 0.01), region(100, 40, 300, 230, 0.02, 0.02)]
    )
    r = ring_measurer().measure(read_image(p)[0], filename="us.dcm")
    assert "ambiguous_regions" in r.qc.split(";")


def test_the_hc_gate_judges_the_head_at_its_own_region_spacing(tmp_path) -> None:
    # The head of the test above: HC 85.085 mm at its region's spacing, but
    # pi (3 (6 + 5) - sqrt((18 + 5) (6 + 15))) = 34.63 mm at the largest region's 0.1 mm
    # pixels, where the first pass measures it. A gate on HC at 60 mm must keep it, one
    # at 90 mm drop it (the gate once judged the first pass and dropped it at 36 mm).
    e = Ellipse(330, 135, 60, 50, 0.0)
    p = two_region_dicom(
        tmp_path, e, [region(0, 0, 259, 269, 0.01, 0.01), region(260, 0, 399, 269, 0.02, 0.03)]
    )
    m = ring_measurer()
    m.rejector = replace(m.rejector, hc_floor=HCFloor(60.0, 70.0, {}))
    r = m.measure(read_image(p)[0], filename="us.dcm")
    assert r.hc_mm == pytest.approx(85.085, rel=0.01) and r.qc == "ok"
    m.rejector = replace(m.rejector, hc_floor=HCFloor(90.0, 100.0, {}))
    r = m.measure(read_image(p)[0], filename="us.dcm")
    assert r.hc_mm is None and r.qc == "no_head_found" and r.head_score < 0


# --- 2. Any CSV in the folder was taken as the pixel-size table ---------------------------


def mini_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    shutil.copytree(MINI, root)
    return root


def test_a_predictions_csv_beside_the_table_is_not_taken_for_it(tmp_path) -> None:
    root = mini_copy(tmp_path)
    (root / "predictions.csv").write_text(
        "filename,frame,hc_mm,pixel_size_mm,pixel_size_source,qc\n"
        "052_HC.png,,70.0,0.5,cli,ok\n433_HC.png,,170.0,0.5,cli,ok\n788_2HC.png,,300.0,0.5,cli,ok\n"
    )
    sizes = {c.image.name: (c.pixel_size_mm, c.hc_mm) for c in find_cases(root)}
    assert sizes == {
        "052_HC.png": (0.087524365, 71.91),
        "433_HC.png": (0.188504727, 173.3),
        "788_2HC.png": (0.261566968, 312.49),
    }


def test_two_pixel_size_tables_are_an_error_naming_both(tmp_path) -> None:
    root = mini_copy(tmp_path)
    shutil.copy(root / "pixel_size_and_HC.csv", root / "other_pixel_size.csv")
    with pytest.raises(InputError, match="other_pixel_size.csv.*pixel_size_and_HC.csv"):
        find_cases(root)


# --- 3. --resume lost frames of multi-frame files -------------------------------------


def test_resume_completes_a_multi_frame_file_cut_off_mid_way(tmp_path, tiny_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(examples.get_path("ybr_color"), src / "cine.dcm")
    out = tmp_path / "o"
    assert predict_cli([src], out, tiny_checkpoint, "--backend", "torch") == 0
    table = out / "predictions.csv"
    lines = table.read_text().splitlines(keepends=True)
    assert len(lines) == 31
    table.write_text("".join(lines[:9]))  # header + 8 of the 30 frames, as after a crash
    assert predict_cli([src], out, tiny_checkpoint, "--backend", "torch", "--resume") == 0
    rows = list(csv.DictReader(open(table)))
    assert sorted(int(r["frame"]) for r in rows) == list(range(30))


# --- 4. Names collided across sub-folders ---------------------------------------------


def two_folders_same_name(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    for sub, e in (("a", Ellipse(200, 135, 80, 60, 0.3)), ("b", Ellipse(200, 135, 60, 40, 0.0))):
        (src / sub).mkdir(parents=True)
        cv2.imwrite(str(src / sub / "IM0001.png"), synthetic_scan(e)[0])
    return src


def test_pixel_sizes_and_submission_are_keyed_by_relative_path(tmp_path, monkeypatch) -> None:
    from fetalhead.infer import backends

    src = two_folders_same_name(tmp_path)
    (tmp_path / "px.csv").write_text(
        "filename,pixel size(mm)\na/IM0001.png,0.1\nb/IM0001.png,0.2\n"
    )
    ck = Checkpoint.from_model(ResUNet(FINE))
    ck.save(tmp_path / "fine.pt")
    monkeypatch.setattr(backends, "TorchBackend", lambda *a, **k: RingBackend())
    out = tmp_path / "o"
    rc = predict_cli(
        [src],
        out,
        tmp_path / "fine.pt",
        "--backend",
        "torch",
        "--pixel-size-csv",
        str(tmp_path / "px.csv"),
        "--submission",
        str(tmp_path / "sub.csv"),
    )
    assert rc == 0
    rows = {r["filename"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert float(rows["a/IM0001.png"]["pixel_size_mm"]) == 0.1
    assert float(rows["b/IM0001.png"]["pixel_size_mm"]) == 0.2
    # Ramanujan perimeters: (80, 60) px -> 44.0 mm at 0.1 mm; (60, 40) px -> 63.5 mm at 0.2 mm.
    assert float(rows["a/IM0001.png"]["hc_mm"]) == pytest.approx(44.03, rel=0.01)
    assert float(rows["b/IM0001.png"]["hc_mm"]) == pytest.approx(63.46, rel=0.01)
    names = [r["filename"] for r in csv.DictReader(open(tmp_path / "sub.csv"))]
    assert sorted(names) == ["a/IM0001.png", "b/IM0001.png"]


def test_bare_name_for_two_inputs_is_refused_with_the_file_named(tmp_path, tiny_checkpoint) -> None:
    src = two_folders_same_name(tmp_path)
    (tmp_path / "px.csv").write_text("filename,pixel size(mm)\nIM0001.png,0.1\n")
    out = tmp_path / "o"
    predict_cli([src], out, tiny_checkpoint, "--pixel-size-csv", str(tmp_path / "px.csv"))
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["qc"] for r in rows] == ["no_pixel_size", "no_pixel_size"]
    assert all("several inputs or rows are called 'IM0001.png'" in r["error"] for r in rows)
    assert rows[0]["error"].startswith("a/IM0001.png:")


# --- 5. evaluate used 1 mm pixels when a case had none ----------------------------------


def test_evaluate_case_without_pixel_size_is_refused() -> None:
    from fetalhead.evaluate import evaluate_case
    from fetalhead.measure import Measurement

    c = find_cases(MINI)[0]
    bare = Case(c.image, c.label, c.layout, None, c.hc_mm)
    m = Measurement(c.image.name, ellipse=Ellipse(400, 270, 100, 80, 0.0), pixel_size_mm=None)
    with pytest.raises(ValueError, match="052_HC.png: no pixel size"):
        evaluate_case(bare, m, (540, 800))


def test_evaluate_skips_and_names_images_without_pixel_size(tmp_path, caplog) -> None:
    from conftest import OracleBackend
    from fetalhead.data import label_ellipse
    from fetalhead.evaluate import evaluate

    root = mini_copy(tmp_path)
    lines = (root / "pixel_size_and_HC.csv").read_text().splitlines()
    (root / "pixel_size_and_HC.csv").write_text("\n".join(lines[:3]) + "\n")  # 788 left out
    cases = [c for c in find_cases(root) if c.pixel_size_mm is not None]
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(FINE)), backend="torch", tta=False)
    m.backend = OracleBackend(
        [label_ellipse(c) for c in cases], [cv2.imread(str(c.image), 0).shape for c in cases], FINE
    )
    with caplog.at_level(logging.WARNING):
        s = evaluate(m, root, tmp_path / "ev", split="all", progress=False)
    assert s["n_images"] == 2 and s["skipped"]["no_pixel_size"] == ["788_2HC.png"]
    assert "788_2HC.png" in caplog.text
    assert "788_2HC.png" not in (tmp_path / "ev" / "metrics.csv").read_text()


# --- 6. serve did not bound concurrent work ---------------------------------------------


class SlowMeasurer:
    """Stands in for a measurer whose work outlasts the request timeout."""

    def __init__(self, inner: HeadMeasurer, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.running = self.peak = 0
        self.lock = threading.Lock()
        self.checkpoint, self.weights_path = inner.checkpoint, None

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _slow(self, fn, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.seconds)
            return fn(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1

    def measure(self, *args, **kwargs):
        return self._slow(self.inner.measure, *args, **kwargs)

    def measure_frames(self, *args, **kwargs):
        return self._slow(self.inner.measure_frames, *args, **kwargs)


def test_timed_out_work_keeps_its_slot_until_it_ends() -> None:
    import httpx

    from fetalhead.serve import ServeSettings, create_app

    slow = SlowMeasurer(ring_measurer(), seconds=1.0)
    app = create_app(slow, ServeSettings(max_concurrent=1, timeout_s=0.2))  # type: ignore[arg-type]
    png = cv2.imencode(".png", synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))[0])[1].tobytes()

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def one() -> int:
                r = await client.post(
                    "/api/v1/measure",
                    files={"file": ("x.png", png, "image/png")},
                    data={"pixel_size_mm": "0.1"},
                )
                return r.status_code

            return list(await asyncio.gather(*(one() for _ in range(3))))

    codes = asyncio.run(run())
    time.sleep(1.2)  # let the last worker finish before counting
    assert slow.peak == 1, f"{slow.peak} measurements ran at once with max_concurrent=1"
    assert set(codes) <= {408, 503} and 408 in codes
