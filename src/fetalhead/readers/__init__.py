"""Readers: image files to :class:`~fetalhead.image.LoadedImage` frames.

Each reader sits behind one small interface (:class:`ImageReader`), as in
nnU-Net's reader registry: ``read_image_bytes`` asks each registered reader in
turn whether it recognises the bytes and lets the first that does decode them.
Pixel-size tables are read in :mod:`fetalhead.readers.tables`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fetalhead.image import InputError, LoadedImage
from fetalhead.readers.dicom import DicomReader
from fetalhead.readers.pillow import PillowReader

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
LABEL_SUFFIXES = ("_Annotation.png", "_Mask.png")


class ImageReader(Protocol):
    """Decodes one kind of image file."""

    name: str

    def recognises(self, data: bytes) -> bool:
        """Whether ``data`` looks like this reader's format (by content, not by name)."""
        ...

    def read(self, data: bytes, name: str) -> list[LoadedImage]:
        """Decode ``data``; raise :class:`InputError` naming ``name`` if it cannot."""
        ...


#: Tried in order; the last one is the catch-all.
READERS: list[ImageReader] = [DicomReader(), PillowReader()]


def is_label_file(path: Path) -> bool:
    """True for HC18 annotation files and simple-layout mask files."""
    return path.name.endswith(LABEL_SUFFIXES)


def read_image_bytes(data: bytes, name: str) -> list[LoadedImage]:
    """Decode PNG, JPEG, other Pillow formats or DICOM from bytes.

    Args:
        data: The file contents.
        name: Name used in error messages.

    Returns:
        One :class:`LoadedImage` per frame (one for ordinary images).

    Raises:
        InputError: If the bytes are empty, truncated or not an image.

    """
    if not data:
        raise InputError(f"{name}: file is empty")
    for reader in READERS:
        if reader.recognises(data):
            return reader.read(data, name)
    raise InputError(f"{name}: not a readable image (PNG, JPEG or DICOM)")


def read_image(path: str | os.PathLike[str]) -> list[LoadedImage]:
    """Read an image file (PNG, JPEG, DICOM by content) as grayscale frames.

    Raises:
        InputError: If the file cannot be read or decoded; the message names it.

    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, not an image") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    return read_image_bytes(data, str(p))


def read_gray(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """Read the first frame of an image as a uint8 grayscale array."""
    return read_image(path)[0].pixels
