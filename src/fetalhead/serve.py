"""Web page and REST API (``pip install fetalhead[serve]``; ``fetalhead serve``).

Uploads are held in memory only (Starlette may spool large multipart bodies to
the system temporary folder); file names are never used for paths. Inference
runs in a worker thread, bounded by a semaphore and a timeout, so the event
loop stays responsive and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import os
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic import Field as PydField
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetalhead import __version__
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.measure import Measurement
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_image_bytes
from fetalhead.readers.dicom import looks_like_dicom
from fetalhead.readers.tables import validate_pixel_size
from fetalhead.spacing import resolve_pixel_size
from fetalhead.write.destination import Destination
from fetalhead.write.sr import Review, build_sr

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ALLOWED_TYPES = {
    "image/png",
    "image/jpeg",
    "image/jpg",
    "application/dicom",
    "application/octet-stream",
    "",
}
TOKEN_ENV = "FETALHEAD_API_TOKEN"


@dataclass
class ServeSettings:
    """Limits of the web service.

    Attributes:
        max_upload_mb: Largest accepted request body.
        timeout_s: Longest time a request waits for its measurement (408 after it);
            a request that finds no free slot within it gets 503.
        max_concurrent: Measurements running at once. A measurement keeps its
            slot until it has really ended, even after its request timed out.
        max_results: Overlays kept in memory for ``GET .../overlay.png``.
        token: Bearer token required on ``/api/`` routes (default: ``$FETALHEAD_API_TOKEN``).
        forward: Send the SR of each accepted review by C-STORE to ``HOST:PORT:AET``.
        stow_url: Or by STOW-RS to this DICOMweb base URL.

    """

    max_upload_mb: float = 32.0
    timeout_s: float = 60.0
    max_concurrent: int = 2
    max_results: int = 64
    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_ENV) or None)
    forward: str | None = None
    stow_url: str | None = None


class BodyLimit:
    """ASGI middleware answering 413 when a request body exceeds the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = JSONResponse(
            {"detail": f"upload larger than {self.max_bytes // 2**20} MB"}, status_code=413
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_big(scope, receive, send)


class _TooLarge(Exception):
    pass


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if looks_like_dicom(data):
        return "dicom"
    return None


def _result_json(m: Measurement, rid: str, model_version: str, level: float) -> dict[str, Any]:
    row = m.to_row()
    gh, gi = m.ga_hadlock, m.ga_intergrowth
    return {
        "id": rid,
        "filename": m.filename,
        "qc": m.qc,
        "ellipse": {
            k: row[k]
            for k in ("center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")
        },
        "ellipse_px": asdict(m.ellipse) if m.ellipse is not None else None,
        "image_shape": list(m.image_shape) if m.image_shape else None,
        "hc_mm": m.hc_mm,
        "hc_interval_mm": [m.hc_low_mm, m.hc_high_mm] if m.hc_low_mm is not None else None,
        "hc_interval_level": level,
        "bpd_mm": m.bpd_mm,
        "ofd_mm": m.ofd_mm,
        "ga": {
            g.formula: {
                "weeks": g.weeks,
                "weeks_days": g.weeks_days,
                # GA at the ends of the HC interval (measurement uncertainty only).
                "weeks_interval": [row[f"ga_weeks_{key}_low"], row[f"ga_weeks_{key}_high"]]
                if row[f"ga_weeks_{key}_low"] is not None
                else None,
                "in_range": g.in_range,
                "valid_range_weeks": g.valid_range_weeks,
            }
            for g, key in ((gh, "hadlock"), (gi, "intergrowth"))
            if g is not None
        },
        # Each formula's GA with the population's +/-2 SD at a given HC, around the HC
        # interval (fetalhead.gestation.hadlock_2sd_range, intergrowth_2sd_range).
        **{
            f"ga_{key}_2sd_weeks": [row[f"ga_weeks_{key}_2sd_low"], row[f"ga_weeks_{key}_2sd_high"]]
            if row[f"ga_weeks_{key}_2sd_low"] is not None
            else None
            for key in ("hadlock", "intergrowth")
        },
        "head_score": m.head_score,
        "pixel_size_mm": m.pixel_size_mm,
        "pixel_size_source": m.pixel_size_source,
        "confidence": m.confidence,
        "overlay_url": f"/api/v1/measure/{rid}/overlay.png",
        "model_version": model_version,
    }


def create_app(measurer: HeadMeasurer, settings: ServeSettings | None = None) -> FastAPI:
    """Build the FastAPI application around a loaded measurer."""
    from fetalhead.write.overlay import draw_overlay, encode_png

    settings = settings or ServeSettings()
    app = FastAPI(
        title="fetalhead",
        version=__version__,
        description="Foetal head biometry (HC, BPD, OFD, GA) from 2D ultrasound. "
        "Research use only, not a medical device.",
    )
    overlays = _Store(settings.max_results)
    reports = _Store(settings.max_results)
    #: What a review needs: the measured image, the measurement and the DICOM header.
    contexts = _Store(settings.max_results)
    # Worker threads cannot be stopped, so a slot is freed when the work ends,
    # not when its request gives up: max_concurrent is a real bound.
    slots = asyncio.Semaphore(settings.max_concurrent)
    executor = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="fetalhead-measure")
    model_info = measurer.describe()
    destination = (
        Destination(settings.forward, settings.stow_url)
        if settings.forward or settings.stow_url
        else None
    )
    model_version = f"fetalhead {__version__} / weights {str(model_info['weights_sha256'])[:12]}"

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if settings.token and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given, f"Bearer {settings.token}"):
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/model")
    async def model() -> dict[str, Any]:
        return {**model_info, "model_version": model_version, "card": _card_summary(measurer)}

    def work(data: bytes, px: float | None) -> tuple[dict[str, Any], bytes, bytes | None, tuple]:
        frame = read_image_bytes(data, "upload")[0]
        try:
            spacing = resolve_pixel_size("upload", frame, cli_mm=px)
        except InputError:
            raise InputError(
                "upload: no pixel size; give pixel_size_mm (the image carries no calibration)"
            ) from None
        m = measurer.measure_frames([frame], [spacing], ["upload"])[0]
        level = measurer.settings.get("interval_level", 0.9)
        sr = None
        if frame.header is not None:
            try:
                report = build_sr(
                    frame.header,  # type: ignore[arg-type]
                    m,
                    weights_sha256=measurer.weights_sha256,
                    interval_level=level if measurer.interval else None,
                )
            except InputError as exc:  # e.g. a source without study identity
                logger.info("no SR: %s", exc)
            else:
                buf = io.BytesIO()
                report.save_as(buf, enforce_file_format=True)
                sr = buf.getvalue()
        png = encode_png(draw_overlay(frame.pixels, m))
        plain = frame.pixels
        if m.image_shape is not None and plain.shape != tuple(m.image_shape):
            plain = cv2.resize(plain, m.image_shape[::-1], interpolation=cv2.INTER_LINEAR)
        context = (encode_png(plain), m, frame.header)
        return _result_json(m, "", model_version, level), png, sr, context

    @app.post("/api/v1/measure")
    async def measure(
        file: UploadFile = File(..., description="PNG, JPEG or DICOM image"),
        pixel_size_mm: str | None = Form(None, description="pixel size in mm"),
    ) -> dict[str, Any]:
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype not in ALLOWED_TYPES:
            raise HTTPException(415, f"unsupported content type {ctype!r}; send PNG, JPEG or DICOM")
        data = await file.read()
        if not data:
            raise HTTPException(400, "upload is empty")
        if _sniff(data) is None:
            raise HTTPException(415, "upload is not a PNG, JPEG or DICOM file")
        px = None
        if pixel_size_mm not in (None, ""):
            try:
                px = validate_pixel_size(pixel_size_mm, "pixel_size_mm")
            except InputError as exc:
                raise HTTPException(422, str(exc)) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout_s
        try:
            await asyncio.wait_for(slots.acquire(), timeout=settings.timeout_s)
        except TimeoutError:
            raise HTTPException(503, "all measuring slots are busy; try again later") from None
        job = loop.run_in_executor(executor, work, data, px)
        job.add_done_callback(_release_when_done(slots))
        try:
            result, png, sr, context = await asyncio.wait_for(
                asyncio.shield(job), timeout=max(0.0, deadline - loop.time())
            )
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        except TimeoutError:
            raise HTTPException(408, f"measuring took longer than {settings.timeout_s} s") from None
        rid = uuid.uuid4().hex
        result["id"] = rid
        result["overlay_url"] = f"/api/v1/measure/{rid}/overlay.png"
        result["sr_url"] = f"/api/v1/measure/{rid}/sr.dcm" if sr is not None else None
        result["image_url"] = f"/api/v1/measure/{rid}/image.png"
        result["review_url"] = f"/api/v1/measure/{rid}/review"
        overlays.put(rid, png)
        contexts.put(rid, context)
        if sr is not None:
            reports.put(rid, sr)
        return result

    @app.get("/api/v1/measure/{rid}/overlay.png")
    async def overlay(rid: str) -> Response:
        return Response(overlays.get(rid), media_type="image/png")

    @app.get("/api/v1/measure/{rid}/image.png")
    async def image(rid: str) -> Response:
        return Response(contexts.get(rid)[0], media_type="image/png")

    @app.post("/api/v1/measure/{rid}/review")
    async def review(rid: str, body: ReviewIn) -> dict[str, Any]:
        _, ai, header = contexts.get(rid)
        if ai.pixel_size_mm is None:
            raise HTTPException(422, "this measurement has no pixel size; nothing to review in mm")
        e = body.ellipse
        ellipse = Ellipse(e.cx, e.cy, e.a, e.b, e.angle)
        edited = ai.ellipse is None or any(
            abs(u - v) > 1e-6
            for u, v in zip(
                (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle),
                (ai.ellipse.cx, ai.ellipse.cy, ai.ellipse.a, ai.ellipse.b, ai.ellipse.angle),
                strict=True,
            )
        )
        reviewed = Measurement(
            ai.filename,
            frame=ai.frame,
            image_shape=ai.image_shape,
            qc=ai.qc if not edited else f"{ai.qc};edited_by_operator",
            ellipse=ellipse,
            pixel_size_mm=ai.pixel_size_mm,
            pixel_size_source=ai.pixel_size_source,
            confidence=ai.confidence,
        )
        decision = Review(
            body.decision,
            body.operator,
            dt.datetime.now(dt.UTC),
            edited,
            ai.hc_mm,
            ai.bpd_mm,
            ai.ofd_mm,
        )
        out = _result_json(
            reviewed, rid, model_version, measurer.settings.get("interval_level", 0.9)
        )
        out |= {"decision": body.decision, "operator": body.operator, "edited": edited,
                "time": decision.time.isoformat(timespec="seconds"), "sr_url": None}  # fmt: skip
        if header is not None and body.decision == "accepted":
            buf = io.BytesIO()
            build_sr(
                header,  # type: ignore[arg-type]
                reviewed,
                weights_sha256=measurer.weights_sha256,
                review=decision,
            ).save_as(buf, enforce_file_format=True)
            reports.put(f"{rid}-reviewed", buf.getvalue())
            out["sr_url"] = f"/api/v1/measure/{rid}-reviewed/sr.dcm"
            if destination is not None:
                try:
                    await asyncio.to_thread(destination.send, buf.getvalue())
                    out["sent"] = True
                except (ConnectionError, OSError) as exc:
                    out["sent"], out["send_error"] = False, str(exc)
                    logger.warning("reviewed SR not sent: %s", exc)
        return out

    @app.get("/api/v1/measure/{rid}/sr.dcm")
    async def report(rid: str) -> Response:
        sr = reports.get(
            rid,
            "no SR for this measurement: SRs are made for DICOM uploads (a PNG or JPEG has no "
            "patient or study to report on), and kept in memory for a while",
        )
        return Response(sr, media_type="application/dicom")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    return app


class _Store:
    """Recent results kept in memory, the oldest dropped beyond ``size``; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, key: str, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def get(
        self,
        key: str,
        missing: str = "no such measurement (results are kept in memory for a while)",
    ) -> Any:
        """The value, or HTTP 404 with ``missing`` as its message."""
        with self.lock:
            value = self.items.get(key)
        if value is None:
            raise HTTPException(404, missing)
        return value


class EllipseIn(BaseModel):
    """An ellipse in pixels of the measured image (0 at the centre of the first pixel)."""

    cx: float
    cy: float
    a: float = PydField(gt=0)
    b: float = PydField(gt=0)
    angle: float


class ReviewIn(BaseModel):
    """A sonographer's decision on a measurement."""

    ellipse: EllipseIn
    decision: Literal["accepted", "rejected"]
    operator: str = PydField(min_length=1, max_length=64)


def _release_when_done(slots: asyncio.Semaphore) -> Callable[[asyncio.Future], None]:
    """A done-callback that frees a measuring slot and collects the work's outcome."""

    def done(job: asyncio.Future) -> None:
        slots.release()
        if not job.cancelled() and job.exception() is not None:
            # Its request may have timed out already; the error is logged, not lost.
            logger.debug("measurement ended with %r", job.exception())

    return done


def _card_summary(measurer: HeadMeasurer) -> str | None:
    if measurer.weights_path is None:
        return None
    card = measurer.weights_path.with_name("MODEL_CARD.md")
    if not card.exists():
        return None
    text = card.read_text(encoding="utf-8")
    return text.split("\n## ", 2)[0].strip()[:2000]


def serve(
    weights: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "auto",
    settings: ServeSettings | None = None,
) -> None:
    """Run the web app with uvicorn (binds to loopback unless told otherwise)."""
    import uvicorn

    measurer = HeadMeasurer.from_pretrained(weights, backend=backend)  # type: ignore[arg-type]
    app = create_app(measurer, settings)
    logger.info("serving on http://%s:%d (OpenAPI docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=5, log_level="info")
