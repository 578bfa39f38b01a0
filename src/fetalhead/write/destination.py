"""Sending DICOM files on: C-STORE to an AE title, or DICOMweb STOW-RS."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import uuid

import pydicom


def parse_forward(text: str) -> tuple[str, int, str]:
    """``HOST:PORT:AET`` -> ``(host, port, aet)``.

    Raises:
        ValueError: If the text is not of that form.

    """
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        raise ValueError(f"--forward must be HOST:PORT:AET, got {text!r}")
    return parts[0], int(parts[1]), parts[2]


class Destination:
    """Where reports go: C-STORE to an AE, or STOW-RS to a DICOMweb server."""

    def __init__(
        self, forward: str | None = None, stow_url: str | None = None, ae_title: str = "FETALHEAD"
    ):
        self.forward = parse_forward(forward) if forward else None
        self.stow_url = stow_url.rstrip("/") if stow_url else None
        self.ae_title = ae_title

    def send(self, data: bytes) -> None:
        """Deliver one DICOM file.

        Raises:
            ConnectionError: If the destination did not accept it.

        """
        if self.forward:
            self._cstore(data)
        elif self.stow_url:
            self._stow(data)

    def _cstore(self, data: bytes) -> None:
        from pynetdicom import AE

        host, port, aet = self.forward  # type: ignore[misc]
        ds = pydicom.dcmread(io.BytesIO(data))
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate(host, port, ae_title=aet)
        if not assoc.is_established:
            raise ConnectionError(f"no association with {aet} at {host}:{port}")
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
            raise ConnectionError(f"C-STORE to {aet} answered status {code!r}")

    def _stow(self, data: bytes) -> None:
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            f"{self.stow_url}/studies",
            data=body,
            method="POST",
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status not in (200, 202):
                    raise ConnectionError(f"STOW-RS answered HTTP {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"STOW-RS to {self.stow_url} failed: {exc}") from None
