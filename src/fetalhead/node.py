"""A DICOM node: receive ultrasound images, measure them, send the reports on.

``fetalhead node`` is a C-STORE SCP (with C-ECHO) built on pynetdicom. Nothing is
lost between receiving and delivering:

1. A received object is written to ``SPOOL/incoming/`` (atomically, synced)
   before the C-STORE is acknowledged.
2. A worker measures each spooled object and writes one DICOM SR per frame
   (:func:`fetalhead.write.sr.build_sr`; a frame without a head gets a report
   that says so) to ``SPOOL/outgoing/``, then a record to ``SPOOL/done/`` and
   only then removes the incoming file. An SR's
   SOP Instance UID is derived from its source's UID, frame and weights, so
   work redone after a crash yields the same report, never a second one.
3. A sender delivers ``SPOOL/outgoing/`` by C-STORE or DICOMweb STOW-RS and
   removes a report only once the destination accepted it. A destination that
   is down is retried with exponential back-off; the spool keeps the reports
   meanwhile, and on the next start whatever is left is taken up again.

Objects that are not ultrasound, too large, corrupt or uncalibrated are
answered (a C-STORE failure status, or a ``SPOOL/failed/`` record with the
reason) and logged; they never stop the node. Logs name objects by a short
hash of their SOP Instance UID, never by patient data. The node binds to
127.0.0.1 unless told otherwise and, given a list, accepts only those calling
AE titles.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import generate_uid

from fetalhead.image import InputError
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_image_bytes
from fetalhead.spacing import resolve_pixel_size
from fetalhead.write.atomic import atomic_write_bytes
from fetalhead.write.destination import Destination, parse_forward
from fetalhead.write.sr import build_sr

logger = logging.getLogger(__name__)

#: Ultrasound Image Storage and Ultrasound Multi-frame Image Storage.
ULTRASOUND_CLASSES = ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1")
#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS, OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000


@dataclass
class NodeConfig:
    """How the node listens and where it sends its reports.

    Attributes:
        ae_title: The node's own AE title.
        host: Address to listen on (loopback unless told otherwise).
        port: DICOM port.
        spool: Spool folder (incoming, outgoing, done, failed).
        forward: Destination for C-STORE as ``HOST:PORT:AET``.
        stow_url: DICOMweb base URL for STOW-RS (``.../dicom-web``), instead of ``forward``.
        allowed_callers: Calling AE titles accepted (empty: any).
        max_object_mb: Largest object accepted.
        retry_initial_s: First wait after a failed delivery; doubled each time.
        retry_max_s: Longest wait between delivery attempts.
        poll_s: How often the workers look for new work.

    """

    ae_title: str = "FETALHEAD"
    host: str = "127.0.0.1"
    port: int = 11112
    spool: Path = field(default_factory=lambda: Path("fetalhead-spool"))
    forward: str | None = None
    stow_url: str | None = None
    allowed_callers: tuple[str, ...] = ()
    max_object_mb: float = 256.0
    retry_initial_s: float = 2.0
    retry_max_s: float = 300.0
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        self.spool = Path(self.spool)
        for aet in (self.ae_title, *self.allowed_callers):
            if not aet or len(aet) > 16 or not aet.isascii() or "\\" in aet:
                raise ValueError(f"AE title {aet!r} must be 1-16 ASCII characters")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.forward and self.stow_url:
            raise ValueError("give --forward or --stow-url, not both")
        if self.forward:
            parse_forward(self.forward)
        if self.stow_url and not self.stow_url.startswith(("http://", "https://")):
            raise ValueError(f"--stow-url must be an http(s) URL, got {self.stow_url!r}")


def spool_id(sop_instance_uid: str) -> str:
    """A short name for logs and spool files that reveals nothing about the patient."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:16]


class DicomNode:
    """The running node: a storage SCP plus a measuring worker and a sender.

    Args:
        config: Addresses, spool and destination.
        measurer: The measurer used for every image.

    """

    def __init__(self, config: NodeConfig, measurer: HeadMeasurer) -> None:
        self.config = config
        self.measurer = measurer
        self.destination = (
            Destination(config.forward, config.stow_url, config.ae_title)
            if config.forward or config.stow_url
            else None
        )
        for sub in ("incoming", "outgoing", "done", "failed"):
            (config.spool / sub).mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._next_try: dict[str, tuple[float, float]] = {}  # file -> (time, wait)

    # --- receiving -------------------------------------------------------------------

    def _on_store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        sop_class = str(getattr(ds, "SOPClassUID", ""))
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        sid = spool_id(uid or uuid.uuid4().hex)
        if not uid:
            logger.warning("refused %s: no SOP Instance UID", sid)
            return CANNOT_UNDERSTAND
        if sop_class not in ULTRASOUND_CLASSES and str(getattr(ds, "Modality", "")) != "US":
            logger.warning("refused %s: not an ultrasound image (SOP class %s)", sid, sop_class)
            return NOT_MATCHING
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=True)
        except Exception as exc:  # a malformed data set must not stop the node
            logger.warning("refused %s: cannot be stored (%s)", sid, type(exc).__name__)
            return CANNOT_UNDERSTAND
        if buf.tell() > self.config.max_object_mb * 2**20:
            logger.warning("refused %s: %d bytes, over the %g MB limit", sid, buf.tell(),
                           self.config.max_object_mb)  # fmt: skip
            return OUT_OF_RESOURCES
        # Spooled (written, synced, renamed) before the C-STORE is acknowledged.
        atomic_write_bytes(self.config.spool / "incoming" / f"{sid}.dcm", buf.getvalue())
        logger.info("received %s", sid)
        return SUCCESS

    # --- measuring -------------------------------------------------------------------

    def process_incoming(self) -> int:
        """Measure every spooled object once; return how many were taken."""
        n = 0
        for path in sorted((self.config.spool / "incoming").glob("*.dcm")):
            if self._stop.is_set():
                break
            self._process(path)
            n += 1
        return n

    def _process(self, path: Path) -> None:
        sid = path.stem
        done = self.config.spool / "done" / f"{sid}.json"
        if done.exists():  # measured before a crash removed the incoming file
            path.unlink(missing_ok=True)
            return
        data = path.read_bytes()
        try:
            reports = self._reports(data, sid)
        except InputError as exc:
            reason = str(exc)
            logger.warning("not measured %s: %s", sid, reason)
            atomic_write_bytes(self.config.spool / "failed" / f"{sid}.txt", reason.encode())
            path.replace(self.config.spool / "failed" / path.name)
            return
        for name, sr in reports:
            atomic_write_bytes(self.config.spool / "outgoing" / name, sr)
        record = {"id": sid, "reports": [n for n, _ in reports], "time": time.time()}
        atomic_write_bytes(done, json.dumps(record).encode())
        path.unlink()
        logger.info("measured %s: %d report(s)", sid, len(reports))
        self.log_status()

    def _reports(self, data: bytes, sid: str) -> list[tuple[str, bytes]]:
        frames = read_image_bytes(data, sid)
        spacings = [resolve_pixel_size(sid, f) for f in frames]  # InputError: uncalibrated
        results = self.measurer.measure_frames(frames, spacings, [sid] * len(frames))
        out = []
        for f, m in zip(frames, results, strict=True):
            # A frame without a head is reported too, as such: the PACS learns that
            # the image was seen and why it has no numbers.
            header = f.header
            sr = build_sr(
                header,  # type: ignore[arg-type]
                m,
                weights_sha256=self.measurer.weights_sha256,
                interval_level=self.measurer.settings.get("interval_level")
                if self.measurer.interval
                else None,
            )
            # The same source, frame and weights always give the same report UID.
            src_uid = str(header.SOPInstanceUID)  # type: ignore[union-attr]
            sr.SOPInstanceUID = generate_uid(
                entropy_srcs=[src_uid, str(f.frame), str(self.measurer.weights_sha256)]
            )
            sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
            buf = io.BytesIO()
            sr.save_as(buf, enforce_file_format=True)
            out.append((f"{sid}_f{f.frame or 0:04d}_sr.dcm", buf.getvalue()))
        return out

    # --- sending ---------------------------------------------------------------------

    def send_outgoing(self) -> int:
        """Try to deliver each waiting report whose back-off has passed; return the sent."""
        if self.destination is None:
            return 0
        sent = 0
        now = time.monotonic()
        for path in sorted((self.config.spool / "outgoing").glob("*.dcm")):
            when, wait = self._next_try.get(path.name, (0.0, self.config.retry_initial_s))
            if now < when or self._stop.is_set():
                continue
            try:
                self.destination.send(path.read_bytes())
            except (ConnectionError, OSError) as exc:
                self._next_try[path.name] = (now + wait, min(2 * wait, self.config.retry_max_s))
                logger.warning("delivery of %s failed (%s); retry in %.0f s", path.stem, exc, wait)
                continue
            path.unlink()
            self._next_try.pop(path.name, None)
            sent += 1
            logger.info("delivered %s", path.stem)
        if sent:
            self.log_status()
        return sent

    # --- running ---------------------------------------------------------------------

    def status(self) -> dict[str, int]:
        """Counts of queued, outgoing, done and failed items in the spool."""
        count = lambda sub, pat: len(list((self.config.spool / sub).glob(pat)))  # noqa: E731
        return {
            "queued": count("incoming", "*.dcm"),
            "to_send": count("outgoing", "*.dcm"),
            "done": count("done", "*.json"),
            "failed": count("failed", "*.txt"),
        }

    def log_status(self) -> None:
        """One status line: queued, to send, done, failed."""
        s = self.status()
        logger.info(
            "spool: %d queued, %d to send, %d done, %d failed",
            s["queued"], s["to_send"], s["done"], s["failed"],
        )  # fmt: skip

    def _loop(self, fn) -> None:
        while not self._stop.is_set():
            try:
                fn()
            except Exception:  # a bug in one item must not stop the node
                logger.exception("node worker error")
            self._stop.wait(self.config.poll_s)

    def start(self) -> None:
        """Start listening, measuring and sending (returns at once)."""
        from pynetdicom import (
            AE,
            StoragePresentationContexts,
            VerificationPresentationContexts,
            evt,
        )

        ae = AE(ae_title=self.config.ae_title)
        # Storage of any common class, so that a non-ultrasound object gets an answer
        # with a reason (status 0xA900) rather than a bare context rejection.
        ae.supported_contexts = StoragePresentationContexts + VerificationPresentationContexts
        if self.config.allowed_callers:
            ae.require_calling_aet = list(self.config.allowed_callers)
        self._server = ae.start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        for fn in (self.process_incoming, self.send_outgoing):
            t = threading.Thread(target=self._loop, args=(fn,), daemon=True)
            t.start()
            self._threads.append(t)
        logger.info(
            "node %s listening on %s:%d; spool %s",
            self.config.ae_title, self.config.host, self.config.port, self.config.spool,
        )  # fmt: skip
        self.log_status()

    def stop(self) -> None:
        """Stop listening and let the workers finish their current item."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=30)
