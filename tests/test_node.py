"""The DICOM node against a real PACS: Debian's Orthanc, started on loopback by the test."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import cv2
import pydicom
import pytest
from pydicom import examples

from conftest import EXAMPLES, predict_cli
from fetalhead.node import DicomNode, NodeConfig, spool_id
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None or not PLUGIN.exists(),
    reason="Debian's orthanc and orthanc-dicomweb are not installed (apt-get install orthanc "
    "orthanc-dicomweb)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc with its own storage, loopback ports and the DICOMweb plugin."""

    def __init__(self, root: Path) -> None:
        self.root, self.http, self.dicom = root, free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "fetalhead-test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (root / "orthanc.json").write_text(json.dumps(config))

    def start(self) -> None:
        log = open(self.root / "orthanc.log", "a")
        self.proc = subprocess.Popen(
            ["Orthanc", str(self.root / "orthanc.json")], stdout=log, stderr=log
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(
            f"Orthanc did not start: {(self.root / 'orthanc.log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def get(self, path: str, accept: str = "application/json"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", headers={"Accept": accept}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body and "json" in accept else body

    def sr_instances(self) -> list[str]:
        """SOP Instance UIDs of the SRs in Orthanc, found by QIDO-RS."""
        found = self.get("/dicom-web/instances?Modality=SR", "application/dicom+json") or []
        return [i["00080018"]["Value"][0] for i in found]

    def sr_dataset(self, sop_uid: str) -> pydicom.Dataset:
        """The SR with this SOP Instance UID, fetched through Orthanc's REST API."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}/tools/lookup", data=sop_uid.encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            found = json.loads(r.read())
        (inst,) = [i["ID"] for i in found if i["Type"] == "Instance"]
        return pydicom.dcmread(io.BytesIO(self.get(f"/instances/{inst}/file", "application/dicom")))


@pytest.fixture
def orthanc(tmp_path):
    o = Orthanc(tmp_path / "orthanc")
    o.start()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def measurer() -> HeadMeasurer:
    return HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch", tta=False)


def c_store(port: int, path: Path, calling: str = "SCANNER") -> int:
    from pynetdicom import AE

    ds = pydicom.dcmread(path)
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="FETALHEAD")
    assert assoc.is_established, "no association with the node"
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def wait_for(fn, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    return fn()


def hc_of(sr: pydicom.Dataset) -> float:
    def walk(items):
        for it in items:
            c = it.get("ConceptNameCodeSequence")
            if c and c[0].CodeValue == "11984-2":
                return float(it.MeasuredValueSequence[0].NumericValue)
            found = walk(it.get("ContentSequence", []))
            if found is not None:
                return found
        return None

    return walk(sr.ContentSequence)


def texts_of(items) -> list[str]:
    out = []
    for it in items:
        if it.get("ValueType") == "TEXT":
            out.append(str(it.TextValue))
        out += texts_of(it.get("ContentSequence", []))
    return out


def node_for(tmp_path: Path, measurer: HeadMeasurer, **kw) -> DicomNode:
    cfg = NodeConfig(port=free_port(), spool=tmp_path / "spool", retry_initial_s=0.3,
                     retry_max_s=1.0, **kw)  # fmt: skip
    return DicomNode(cfg, measurer)


def test_c_store_to_node_gives_an_sr_in_orthanc_with_the_clis_hc(
    tmp_path, orthanc, measurer
) -> None:
    node = node_for(tmp_path, measurer, forward=f"127.0.0.1:{orthanc.dicom}:ORTHANC")
    node.start()
    try:
        src = Path(examples.get_path("palette_color"))
        assert c_store(node.config.port, src) == 0x0000
        uids = wait_for(orthanc.sr_instances)
    finally:
        node.stop()
    assert len(uids) == 1
    sr = orthanc.sr_dataset(uids[0])
    rc = predict_cli([src], tmp_path / "cli", DEFAULT_WEIGHTS, "--backend", "torch", "--no-tta")
    assert rc == 0
    (row,) = list(csv.DictReader(open(tmp_path / "cli" / "predictions.csv")))
    # This obstetric example shows no foetal head: the CLI reports none, and so does the SR.
    assert row["hc_mm"] == "" and row["qc"] == "no_head_found"
    assert hc_of(sr) is None
    assert any("no foetal head" in t for t in texts_of(sr.ContentSequence))
    assert sr.PatientID == pydicom.dcmread(src).PatientID
    assert node.status() == {"queued": 0, "to_send": 0, "done": 1, "failed": 0}


def hc18_as_dicom(path: Path) -> Path:
    """An HC18 example image (a real head) as an ultrasound DICOM with its pixel size."""
    from pydicom.uid import generate_uid

    from test_dicom import make_dicom, region

    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.imread(str(EXAMPLES / "191_HC.png"), cv2.IMREAD_GRAYSCALE)
    h, w = img.shape
    make_dicom(path, img, [region(0, 0, w - 1, h - 1, 0.0157119035721, 0.0157119035721)])
    ds = pydicom.dcmread(path)
    ds.PatientID, ds.PatientName = "HC18-191", "Anonymous"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_real_head_reaches_orthanc_with_the_clis_hc(tmp_path, orthanc, measurer) -> None:
    src = hc18_as_dicom(tmp_path / "in" / "head.dcm")
    node = node_for(tmp_path, measurer, forward=f"127.0.0.1:{orthanc.dicom}:ORTHANC")
    node.start()
    try:
        assert c_store(node.config.port, src) == 0x0000
        uids = wait_for(orthanc.sr_instances)
    finally:
        node.stop()
    sr = orthanc.sr_dataset(uids[0])
    rc = predict_cli([src], tmp_path / "cli", DEFAULT_WEIGHTS, "--backend", "torch", "--no-tta")
    assert rc == 0
    (row,) = list(csv.DictReader(open(tmp_path / "cli" / "predictions.csv")))
    assert float(row["hc_mm"]) > 100
    assert hc_of(sr) == pytest.approx(float(row["hc_mm"]), abs=1e-3)  # the CSV keeps 6 digits


def test_stow_rs_forwarding(tmp_path, orthanc, measurer) -> None:
    node = node_for(tmp_path, measurer, stow_url=f"http://127.0.0.1:{orthanc.http}/dicom-web")
    node.start()
    try:
        assert c_store(node.config.port, Path(examples.get_path("palette_color"))) == 0
        assert len(wait_for(orthanc.sr_instances)) == 1
    finally:
        node.stop()


def test_destination_down_then_back_loses_nothing(tmp_path, measurer) -> None:
    o = Orthanc(tmp_path / "orthanc")  # configured, not started: the PACS is down
    node = node_for(tmp_path, measurer, forward=f"127.0.0.1:{o.dicom}:ORTHANC")
    node.start()
    try:
        assert c_store(node.config.port, Path(examples.get_path("palette_color"))) == 0
        assert wait_for(lambda: node.status()["to_send"] == 1)  # measured, kept in the spool
        time.sleep(1.5)  # some failed deliveries with back-off
        assert node.status()["to_send"] == 1
        o.start()
        try:
            assert len(wait_for(o.sr_instances)) == 1
            assert wait_for(lambda: node.status()["to_send"] == 0)
        finally:
            o.stop()
    finally:
        node.stop()


def test_node_killed_mid_work_measures_the_spooled_image_once(tmp_path, orthanc) -> None:
    spool = tmp_path / "spool"
    port = free_port()
    cmd = [
        str(Path(__import__("sys").executable).with_name("fetalhead")), "node", "--port",
        str(port), "--spool", str(spool), "--forward", f"127.0.0.1:{orthanc.dicom}:ORTHANC",
    ]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _listening(port), 60)
        assert c_store(port, Path(examples.get_path("palette_color"))) == 0
    finally:
        first.kill()  # SIGKILL right after the acknowledgement, mid-work
        first.wait()
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        uids = wait_for(orthanc.sr_instances, 90)
        time.sleep(2)
        assert len(orthanc.sr_instances()) == 1, "the image was reported more than once"
        assert len(uids) == 1
        assert not list((spool / "incoming").glob("*.dcm"))
    finally:
        second.terminate()
        second.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_bad_objects_are_answered_with_a_reason(tmp_path, measurer, caplog) -> None:
    from pydicom.uid import generate_uid

    node = node_for(tmp_path, measurer, allowed_callers=("SCANNER",))
    node.start()
    try:
        # Not ultrasound: a CT image from pydicom's examples.
        assert c_store(node.config.port, Path(examples.get_path("ct"))) == 0xA900
        # Uncalibrated ultrasound: received, then failed with the reason, node still up.
        ds = pydicom.dcmread(examples.get_path("palette_color"))
        del ds.SequenceOfUltrasoundRegions
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp_path / "nocal.dcm", enforce_file_format=True)
        assert c_store(node.config.port, tmp_path / "nocal.dcm") == 0
        assert wait_for(lambda: node.status()["failed"] == 1)
        reason = (node.config.spool / "failed" / f"{spool_id(ds.SOPInstanceUID)}.txt").read_text()
        assert "no pixel size" in reason
        # A calling AE title that is not on the list is refused.
        from pynetdicom import AE

        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.config.port, ae_title="FETALHEAD")
        assert assoc.is_rejected
        # A corrupt object in the spool (as if received before a crash) fails with a reason.
        (node.config.spool / "incoming" / "corrupt0000000000.dcm").write_bytes(b"DICM" * 100)
        assert wait_for(lambda: node.status()["failed"] == 2)
        reason = (node.config.spool / "failed" / "corrupt0000000000.txt").read_text()
        assert reason.startswith("corrupt0000000000: ") and "DICOM" in reason
        # C-ECHO answers.
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", node.config.port, ae_title="FETALHEAD")
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
    finally:
        node.stop()
    assert "Doe" not in caplog.text and str(ds.PatientName) not in caplog.text


def test_reviewed_report_from_the_web_page_reaches_orthanc(tmp_path, orthanc, measurer) -> None:
    from fastapi.testclient import TestClient

    from fetalhead.serve import ServeSettings, create_app

    settings = ServeSettings(token=None, stow_url=f"http://127.0.0.1:{orthanc.http}/dicom-web")
    client = TestClient(create_app(measurer, settings))
    data = hc18_as_dicom(tmp_path / "head.dcm").read_bytes()
    d = client.post("/api/v1/measure", files={"file": ("h.dcm", data, "application/dicom")}).json()
    e = dict(d["ellipse_px"], a=d["ellipse_px"]["a"] * 1.05)
    r = client.post(d["review_url"], json={"ellipse": e, "decision": "accepted", "operator": "op"})
    assert r.status_code == 200 and r.json()["sent"] is True
    (uid,) = wait_for(orthanc.sr_instances)
    sr = orthanc.sr_dataset(uid)
    assert sr.VerificationFlag == "VERIFIED"
    assert hc_of(sr) == pytest.approx(r.json()["hc_mm"], abs=1e-3)


def test_objects_over_the_size_limit_are_refused(tmp_path, measurer) -> None:
    node = node_for(tmp_path, measurer, max_object_mb=0.01)
    node.start()
    try:
        assert c_store(node.config.port, Path(examples.get_path("palette_color"))) == 0xA700
        assert node.status() == {"queued": 0, "to_send": 0, "done": 0, "failed": 0}
    finally:
        node.stop()
