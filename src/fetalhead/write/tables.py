"""Prediction tables: appended row by row, never torn; HC18 submissions."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fetalhead.write.atomic import atomic_write_bytes, atomic_writer

SUBMISSION_COLUMNS = [
    "filename",
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if not np.isnan(v) else ""
    return str(v)


class RowWriter:
    """Appends rows to a CSV, each in one write, flushed and synced."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        _drop_partial_line(path)
        new = not path.exists() or path.stat().st_size == 0
        self.fh = open(path, "a", encoding="utf-8", newline="")
        if new:
            self._write(columns)

    def _write(self, *lines: list[Any]) -> None:
        """Append lines in a single write, flushed and synced."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(lines)
        self.fh.write(buf.getvalue())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        self.write_many([row])

    def write_many(self, rows: list[dict[str, Any]]) -> None:
        """Append several rows (all frames of one file) in a single write."""
        self._write(*([_fmt(row.get(c)) for c in self.columns] for row in rows))

    def close(self) -> None:
        self.fh.close()


def _drop_partial_line(path: Path) -> None:
    """Cut an unterminated last line (left by a hard kill) from a CSV."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def read_predictions(path: Path) -> list[dict[str, str]]:
    """Read a predictions CSV, ignoring an unterminated last line."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))


def completed_files(rows: list[dict[str, str]]) -> set[str]:
    """Files whose every frame has a row (what ``--resume`` may skip).

    A row records how many frames its file has (``n_frames``); a file is done
    when that many distinct frames are present. Rows of a file are written
    together, so a partial file only comes from a run killed mid-write, or from
    older tables without the column, whose multi-frame files are redone.
    """
    frames: dict[str, set[str]] = {}
    expected: dict[str, int] = {}
    for r in rows:
        name = r["filename"]
        frames.setdefault(name, set()).add(r.get("frame", ""))
        try:
            expected[name] = int(r.get("n_frames") or 0)
        except ValueError:
            expected[name] = 0
    done = set()
    for name, seen in frames.items():
        n = expected[name]
        if (n == 0 and seen == {""}) or (n >= 1 and len(seen) == n):
            done.add(name)
    return done


def keep_only_files(path: Path, rows: list[dict[str, str]], names: set[str]) -> int:
    """Rewrite a predictions table, already read as ``rows``, keeping the rows of ``names``.

    Returns:
        The number of rows dropped.

    """
    kept = [r for r in rows if r["filename"] in names]
    if len(kept) == len(rows):
        return 0  # (a torn last line is cut by RowWriter when it opens the table)
    with atomic_writer(path) as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    return len(rows) - len(kept)


def submission_names(names: list[str]) -> list[str]:
    """HC18 submission names: bare file names when they are unique, else relative paths."""
    counts = Counter(PurePosixPath(n).name for n in set(names))
    if all(c == 1 for c in counts.values()):
        return [PurePosixPath(n).name for n in names]
    return list(names)


def write_submission(rows: list[dict[str, str]], path: Path) -> None:
    """Write the HC18 submission CSV (one row per image; empty values if unmeasured).

    HC18 names images by file name; when two inputs in different sub-folders
    share a file name, every row keeps its path relative to the input folder
    instead, so that no two rows can be confused.
    """
    names = submission_names([r["filename"] for r in rows])
    with atomic_writer(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SUBMISSION_COLUMNS)
        for name, r in zip(names, rows, strict=True):
            w.writerow([name] + [r.get(c, "") for c in SUBMISSION_COLUMNS[1:]])
