import io
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from browser import drag_axis_handle
from conftest import EXAMPLES, TINY

pytest.importorskip("fastapi")
import httpx
import uvicorn
from fastapi.testclient import TestClient

from fetalhead.geometry.ellipse import Ellipse, render_ellipse_coverage
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.serve import ServeSettings, create_app
from test_dicom import make_dicom, region

PNG = (EXAMPLES / "054_HC.png").read_bytes()


class FixedHead:
    """A backend that always sees the same head in the middle of the input."""

    name = "fixed"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        cov = render_ellipse_coverage(Ellipse(w / 2, h / 2, w / 4, h / 4, 0.3), (h, w))
        return np.repeat(cov[None], len(batch), axis=0).astype(np.float32)


@pytest.fixture(scope="module")
def measurer() -> HeadMeasurer:
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    m.backend = FixedHead()
    return m


@pytest.fixture(scope="module")
def client(measurer) -> TestClient:
    return TestClient(create_app(measurer, ServeSettings(max_upload_mb=1, token=None)))


def post(client, data: bytes, ctype="image/png", px: str | None = "0.1", name="x.png"):
    form = {"pixel_size_mm": px} if px is not None else {}
    return client.post("/api/v1/measure", files={"file": (name, data, ctype)}, data=form)


def test_health_model_page_and_docs(client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/api/v1/model").json()
    assert info["architecture"] == "ResUNet" and "model_version" in info
    page = client.get("/")
    assert page.status_code == 200 and "fetalhead" in page.text
    # Works offline: no script, style or image from another host.
    assert 'src="http' not in page.text and 'href="http' not in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "/api/v1/measure" in client.get("/openapi.json").text


def test_measure_png_and_overlay(client, measurer) -> None:
    r = post(client, PNG)
    assert r.status_code == 200, r.text
    d = r.json()
    expected = measurer.measure(
        np.asarray(__import__("PIL.Image").Image.open(io.BytesIO(PNG))), 0.1
    )
    assert d["hc_mm"] == pytest.approx(expected.hc_mm, rel=1e-6)
    assert set(d["ellipse"]) == {
        "center_x_mm",
        "center_y_mm",
        "semi_axes_a_mm",
        "semi_axes_b_mm",
        "angle_rad",
    }
    assert d["pixel_size_source"] == "cli" and d["qc"] in ("ok", "low_confidence")
    assert set(d["ga"]) == {"hadlock_1984", "intergrowth_21st"}
    assert "in_range" in d["ga"]["hadlock_1984"]
    spread = expected.ga_hadlock_2sd
    assert d["ga_hadlock_2sd_weeks"] == (pytest.approx(list(spread)) if spread else None)
    spread = expected.ga_intergrowth_2sd
    assert d["ga_intergrowth_2sd_weeks"] == (pytest.approx(list(spread)) if spread else None)
    ov = client.get(d["overlay_url"])
    assert ov.status_code == 200 and ov.content.startswith(b"\x89PNG")
    assert client.get("/api/v1/measure/nope/overlay.png").status_code == 404


def test_dicom_upload_uses_its_calibration(client, tmp_path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (270, 400), np.uint8)
    data = make_dicom(tmp_path / "a.dcm", img, [region(0, 0, 399, 269, 0.015, 0.015)]).read_bytes()
    d = post(client, data, "application/dicom", px=None, name="a.dcm").json()
    assert d["pixel_size_source"] == "dicom-region" and d["pixel_size_mm"] == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("data", "ctype", "px", "status", "message"),
    [
        (PNG, "image/png", None, 422, "pixel_size_mm"),
        (PNG, "image/png", "-2", 422, "positive"),
        (PNG, "image/png", "abc", 422, "not a number"),
        (b"", "image/png", "0.1", 400, "empty"),
        (b"hello world, not an image" * 4, "image/png", "0.1", 415, "not a PNG"),
        (PNG, "text/plain", "0.1", 415, "content type"),
        (PNG[:2000], "image/png", "0.1", 422, "upload"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "image/png", "0.1", 422, "upload"),
    ],
)
def test_bad_uploads_get_4xx_with_message(client, data, ctype, px, status, message) -> None:
    r = post(client, data, ctype, px)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_upload_size_limit(client) -> None:
    r = post(client, PNG + b"\x00" * (2 * 2**20))
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_token_required_when_configured(measurer) -> None:
    c = TestClient(create_app(measurer, ServeSettings(token="s3cret")))
    assert post(c, PNG).status_code == 401
    assert c.get("/healthz").status_code == 200
    r = c.post(
        "/api/v1/measure",
        files={"file": ("x.png", PNG, "image/png")},
        data={"pixel_size_mm": "0.1"},
        headers={"Authorization": "Bearer s3cret"},
    )
    assert r.status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(measurer):
    port = free_port()
    app = create_app(measurer, ServeSettings(max_upload_mb=4, timeout_s=30, token=None))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_load_200_requests_8_clients(live_server, measurer) -> None:
    from PIL import Image

    expected = measurer.measure(np.asarray(Image.open(io.BytesIO(PNG))), 0.1).hc_mm
    bad = [
        (b"junk" * 50, "image/png", "0.1"),
        (PNG, "image/png", "-1"),
        (PNG[:3000], "image/png", "0.1"),
    ]
    jobs = [(PNG, "image/png", "0.1") if i % 2 == 0 else bad[i % 3] for i in range(200)]

    def one(job):
        data, ctype, px = job
        with httpx.Client(base_url=live_server, timeout=60) as c:
            r = c.post(
                "/api/v1/measure",
                files={"file": ("u.png", data, ctype)},
                data={"pixel_size_mm": px},
            )
            return job, r.status_code, r.json()

    one(jobs[0])  # warm up
    before = rss_mb()
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    assert time.time() - t0 < 300
    assert not [s for _, s, _ in results if s >= 500]
    for (data, _, px), status, body in results:
        if data is PNG and px == "0.1":
            assert status == 200 and body["hc_mm"] == pytest.approx(expected, rel=1e-6)
        else:
            assert 400 <= status < 500
    assert rss_mb() - before < 200


def test_slow_client_does_not_block_others(live_server) -> None:
    host, port = live_server.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(
        b"POST /api/v1/measure HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n"
    )
    try:
        t0 = time.time()
        r = httpx.get(f"{live_server}/healthz", timeout=5)
        assert r.status_code == 200 and time.time() - t0 < 2
    finally:
        slow.close()


@pytest.mark.browser
def test_browser_end_to_end(live_server, tmp_path) -> None:
    pw = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(live_server)
        page.set_input_files("#file", str(EXAMPLES / "054_HC.png"))
        # The fixed head is about 1,070 px round: at 0.17 mm, an HC of about 180 mm
        # (20 weeks), inside both formulas' population ranges.
        page.fill("#pixel", "0.17")
        page.click("#measure")
        page.wait_for_selector("#hc-value", timeout=30000)
        hc = page.text_content("#hc-value")
        assert hc and hc.endswith("mm") and 170 < float(hc.split()[0]) < 190
        terms = page.locator("#numbers dt").all_text_contents()
        values = dict(zip(terms, page.locator("#numbers dd").all_text_contents(), strict=True))
        for formula in ("GA (Hadlock 1984)", "GA (INTERGROWTH-21st)"):
            assert re.fullmatch(r"\d+w\dd \(\d+w\dd–\d+w\dd, ±2 SD\)", values[formula]), values
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        assert page.locator("#table tbody tr").count() == 1
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()


def test_browser_review_edit_accept_and_export(live_server, tmp_path) -> None:
    """Drag a handle, see HC change, accept, and find the edited value in the CSV and SR."""
    import csv as csvmod

    import pydicom

    from test_sr import us_dicom

    pw = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    src = us_dicom(tmp_path / "us.dcm")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
        page.goto(live_server)
        page.set_input_files("#file", str(src))
        page.click("#measure")
        page.wait_for_selector("#handle-a", timeout=30000)
        before = float(page.text_content("#hc-value").split()[0])
        # Drag the axis handle 40 screen pixels further out along its axis.
        drag_axis_handle(page, 40)
        after = float(page.text_content("#hc-value").split()[0])
        assert after > before + 1, (before, after)
        page.fill("#operator", "sonographer A")
        page.click("#accept")
        page.wait_for_selector("text=accepted by sonographer A")
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        with page.expect_download() as dl:
            page.click("#csv")
        (row,) = list(csvmod.DictReader(open(dl.value.path())))
        assert row["decision"] == "accepted" and row["values"] == "edited"
        assert row["operator"] == "sonographer A"
        assert float(row["hc_mm"]) == pytest.approx(after, abs=0.06)
        assert float(row["ai_hc_mm"]) == pytest.approx(before, abs=0.06)
        with page.expect_download() as dl:
            page.click(".sr-link")
        sr = pydicom.dcmread(dl.value.path())
        browser.close()
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "sonographer A"
    hc = [
        float(it.MeasuredValueSequence[0].NumericValue)
        for g in sr.ContentSequence[-1].ContentSequence
        for it in g.get("ContentSequence", [])
        if it.get("ConceptNameCodeSequence")
        and it.ConceptNameCodeSequence[0].CodeValue == "11984-2"
    ]
    assert hc == [pytest.approx(float(row["hc_mm"]), abs=0.01)]
    texts = [str(it.TextValue) for g in sr.ContentSequence[-1].ContentSequence
             for it in g.get("ContentSequence", []) if it.ValueType == "TEXT"]  # fmt: skip
    assert any("edited by the operator" in t and f"HC {before:.1f} mm" in t for t in texts), texts


def test_review_endpoint_recomputes_the_edited_values(client) -> None:
    d = post(client, PNG).json()
    e = dict(d["ellipse_px"])
    e["a"], e["b"] = 100.0, 80.0
    r = client.post(
        d["review_url"], json={"ellipse": e, "decision": "accepted", "operator": "op"}
    ).json()
    # Semi-axes 100 and 80 px at 0.1 mm: HC = 0.1 * Ramanujan(100, 80) = 56.72 mm.
    assert r["hc_mm"] == pytest.approx(56.72, abs=0.01)
    assert r["bpd_mm"] == pytest.approx(16.0) and r["ofd_mm"] == pytest.approx(20.0)
    assert r["edited"] is True and r["sr_url"] is None  # a PNG has no SR
    bad = client.post(d["review_url"], json={"ellipse": e, "decision": "maybe", "operator": "op"})
    assert bad.status_code == 422
    same = client.post(
        d["review_url"],
        json={"ellipse": d["ellipse_px"], "decision": "rejected", "operator": "op"},
    ).json()
    assert same["edited"] is False and same["decision"] == "rejected"


def test_request_timeout_gives_408(measurer) -> None:
    class Slow:
        name = "slow"

        def __call__(self, batch):
            time.sleep(1.0)
            return FixedHead()(batch)

    slow = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    slow.backend = Slow()
    c = TestClient(create_app(slow, ServeSettings(timeout_s=0.2, token=None)))
    r = post(c, PNG)
    assert r.status_code == 408 and "longer than" in r.json()["detail"]
