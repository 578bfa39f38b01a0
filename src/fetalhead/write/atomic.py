"""Atomic file writes: a crash leaves the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w") -> Iterator[IO]:
    """Write a file atomically: to a temporary sibling, fsync, then rename.

    A crash leaves either the old file or the complete new one, never a part.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would create it
        kwargs = {"newline": "", "encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
