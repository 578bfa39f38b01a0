"""DICOM SR (TID 5000): values found by their codes, references, validity, refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import FINE_CONFIG, RingBackend, predict_cli, synthetic_scan
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.measure import Measurement
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_image
from fetalhead.write.sr import build_sr
from test_dicom import make_dicom, region

#: The head: semi-axes 80 and 60 pixels at 0.2 mm: HC = 0.2 * 445.05 = 89.01 mm (Ramanujan).
HEAD = Ellipse(200, 135, 80, 60, 0.3)


def us_dicom(path: Path) -> Path:
    img, _ = synthetic_scan(HEAD)
    make_dicom(path, img, [region(0, 0, 399, 269, 0.02, 0.02)])
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID, ds.PatientSex = "Doe^Jane", "P-0042", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261126", "101500", "7", "A1"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.save_as(path, enforce_file_format=True)
    return path


def ring_measurer() -> HeadMeasurer:
    m = HeadMeasurer(
        Checkpoint.from_model(ResUNet(FINE_CONFIG)), backend="torch", tta=False,
        reject_non_heads=False,
    )  # fmt: skip
    m.backend = RingBackend()
    return m


def find(items, scheme: str, value: str) -> list:
    """Content items anywhere in the tree whose concept name is (value, scheme)."""
    out = []
    for it in items:
        c = it.get("ConceptNameCodeSequence")
        if c and c[0].CodeValue == value and c[0].CodingSchemeDesignator == scheme:
            out.append(it)
        out += find(it.get("ContentSequence", []), scheme, value)
    return out


def number(item) -> tuple[float, str]:
    mv = item.MeasuredValueSequence[0]
    return float(mv.NumericValue), mv.MeasurementUnitsCodeSequence[0].CodeValue


@pytest.fixture
def report(tmp_path):
    src_path = us_dicom(tmp_path / "us.dcm")
    m = ring_measurer().measure(read_image(src_path)[0], filename="us.dcm")
    sr = build_sr(pydicom.dcmread(src_path), m, weights_sha256="ab" * 32)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    return pydicom.dcmread(tmp_path / "sr.dcm"), pydicom.dcmread(src_path), m, tmp_path / "sr.dcm"


def test_values_are_found_by_their_codes(report) -> None:
    sr, _, m, _ = report
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.ConceptNameCodeSequence[0].CodeValue == "125000"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "5000"
    (biometry,) = find(sr.ContentSequence, "DCM", "125002")
    assert len(find(biometry.ContentSequence, "DCM", "125005")) == 3  # one group per type
    (hc,) = find(sr.ContentSequence, "LN", "11984-2")
    (bpd,) = find(sr.ContentSequence, "LN", "11820-8")
    (ofd,) = find(sr.ContentSequence, "LN", "11851-3")
    assert number(hc)[1] == number(bpd)[1] == number(ofd)[1] == "mm"
    assert number(hc)[0] == pytest.approx(89.01, rel=0.01)
    assert number(bpd)[0] == pytest.approx(24.0, rel=0.015)
    assert number(ofd)[0] == pytest.approx(32.0, rel=0.015)
    (ga,) = find(sr.ContentSequence, "LN", "18185-9")
    weeks, unit = number(ga)
    assert unit == "wk" and weeks == pytest.approx(m.ga_hadlock.weeks, abs=1e-3)
    (eq,) = find(ga.ContentSequence, "DCM", "121420")
    assert eq.ConceptCodeSequence[0].CodeValue == "11932-1"  # HC, Hadlock 1984
    comments = [c.TextValue for c in find(sr.ContentSequence, "DCM", "121106")]
    assert any("INTERGROWTH-21st" in c and "no code" in c for c in comments)
    assert any("quality control: ok" in c for c in comments)


def test_observer_is_the_device_and_the_source_is_referenced(report) -> None:
    sr, src, _, _ = report
    (kind,) = find(sr.ContentSequence, "DCM", "121005")
    assert kind.ConceptCodeSequence[0].CodeValue == "121007"  # Device
    (model,) = find(sr.ContentSequence, "DCM", "121015")
    assert "ab" * 32 in model.TextValue
    (hc,) = find(sr.ContentSequence, "LN", "11984-2")
    (scoord,) = [c for c in hc.ContentSequence if c.ValueType == "SCOORD"]
    assert scoord.GraphicType == "ELLIPSE" and len(scoord.GraphicData) == 8
    # Major-axis end points first; (0, 0) is the corner of the first pixel.
    x1, y1, x2, y2 = scoord.GraphicData[:4]
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((200.5, 135.5), abs=1.0)
    assert ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 == pytest.approx(160, rel=0.015)
    ref = scoord.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    # Patient and study copied; series and instance new.
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert sr[key].value == src[key].value, key
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.SOPInstanceUID != src.SOPInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_dciodvfy_reports_no_errors(report) -> None:
    _, _, _, path = report
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert "ComprehensiveSR" in text
    assert "Error" not in text, text


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_reviewed_report_is_verified_and_valid(tmp_path) -> None:
    import datetime as dt

    from fetalhead.write.sr import Review

    src_path = us_dicom(tmp_path / "us.dcm")
    m = ring_measurer().measure(read_image(src_path)[0], filename="us.dcm")
    when = dt.datetime(2026, 11, 26, 16, 30, tzinfo=dt.UTC)
    review = Review("accepted", "sonographer A", when, True, 89.0, 24.0, 32.0)
    sr = build_sr(pydicom.dcmread(src_path), m, review=review)
    sr.save_as(tmp_path / "reviewed.dcm", enforce_file_format=True)
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == "20261126163000"
    (statement,) = [
        c for c in find(sr.ContentSequence, "DCM", "121106") if "Reviewed" in c.TextValue
    ]
    assert statement.TextValue == (
        "Reviewed: accepted by sonographer A at 2026-11-26 16:30:00 UTC; the ellipse is edited "
        "by the operator. AI values: HC 89.0 mm, BPD 24.0 mm, OFD 32.0 mm."
    )
    out = subprocess.run(
        ["dciodvfy", str(tmp_path / "reviewed.dcm")], capture_output=True, text=True
    )
    assert "Error" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_no_head_is_reported_without_numbers(tmp_path) -> None:
    src = pydicom.dcmread(us_dicom(tmp_path / "us.dcm"))
    sr = build_sr(src, Measurement("us.dcm", qc="no_head_found"))
    assert not find(sr.ContentSequence, "LN", "11984-2")
    (comment,) = find(sr.ContentSequence, "DCM", "121106")
    assert "no foetal head" in comment.TextValue and "no_head_found" in comment.TextValue
    del src.StudyInstanceUID
    with pytest.raises(InputError, match="no StudyInstanceUID"):
        build_sr(src, Measurement("us.dcm", qc="no_head_found"))


def test_cli_writes_reports_for_dicom_and_says_why_not_for_png(
    tmp_path, monkeypatch, caplog
) -> None:
    from fetalhead.infer import backends

    src = tmp_path / "in"
    src.mkdir()
    us_dicom(src / "us.dcm")
    cv2.imwrite(str(src / "plain.png"), synthetic_scan(HEAD)[0])
    Checkpoint.from_model(ResUNet(FINE_CONFIG)).save(tmp_path / "fine.pt")
    monkeypatch.setattr(backends, "TorchBackend", lambda *a, **k: RingBackend())
    rc = predict_cli(
        [src], tmp_path / "o", tmp_path / "fine.pt", "--backend", "torch", "--pixel-size",
        "0.2", "--sr", str(tmp_path / "sr"),
    )  # fmt: skip
    assert rc == 0
    assert [p.name for p in (tmp_path / "sr").iterdir()] == ["us_sr.dcm"]
    assert "plain.png: not a DICOM file, so no SR" in caplog.text


def test_api_offers_the_report_of_a_dicom_upload(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from fetalhead.serve import create_app

    client = TestClient(create_app(ring_measurer()))
    data = us_dicom(tmp_path / "us.dcm").read_bytes()
    r = client.post("/api/v1/measure", files={"file": ("us.dcm", data, "application/dicom")})
    assert r.status_code == 200, r.text
    sr = client.get(r.json()["sr_url"])
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    png = cv2.imencode(".png", synthetic_scan(HEAD)[0])[1].tobytes()
    r = client.post(
        "/api/v1/measure",
        files={"file": ("x.png", png, "image/png")},
        data={"pixel_size_mm": "0.2"},
    )
    assert r.json()["sr_url"] is None
    missing = client.get(f"/api/v1/measure/{r.json()['id']}/sr.dcm")
    assert missing.status_code == 404 and "PNG or JPEG" in missing.json()["detail"]
