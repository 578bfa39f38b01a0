"""Pixel-size tables: HC18-style CSVs that give each image's pixel size (and HC).

Names in a table are keys as written (``IM0001`` or ``a/IM0001``), matched to
each input's path relative to the folder it was found in. A bare file name
matches an input in a sub-folder only when no other input has that name.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fetalhead.image import InputError


def validate_pixel_size(value: object, name: str) -> float:
    """Return ``value`` as a positive finite float or raise :class:`InputError`."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}: pixel size {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name}: pixel size must be a positive number of mm, got {value!r}")
    if v > 10:
        raise InputError(f"{name}: pixel size {v} mm is implausible (expected about 0.05-1 mm)")
    return v


def _norm_key(name: str) -> str:
    return PurePosixPath(name.strip().replace("\\", "/")).as_posix().removeprefix("./")


@dataclass(frozen=True)
class PixelSizeTable:
    """Pixel sizes (and reference HC where given) keyed by file name or relative path."""

    pixel_size_mm: dict[str, float]
    hc_mm: dict[str, float]
    problems: dict[str, str]
    path: Path | None = None

    def key_for(self, name: str, shared_basenames: Collection[str] = ()) -> str:
        """The table key of an input: its relative path, else its file name if unambiguous.

        A row matches by file name alone only when no other row and no other input
        has that file name.

        Args:
            name: The input's path relative to the folder given (posix separators).
            shared_basenames: File names that more than one input has; a bare file
                name in the table cannot tell those apart.

        Raises:
            InputError: If the input is not listed, or only ambiguously.

        """
        rel = _norm_key(name)
        if rel in self.pixel_size_mm or rel in self.problems:
            return rel
        base = PurePosixPath(rel).name
        keys = [k for k in [*self.pixel_size_mm, *self.problems] if PurePosixPath(k).name == base]
        if not keys:
            raise InputError(f"{rel}: not listed in the pixel-size CSV")
        if len(keys) > 1 or base in shared_basenames:
            raise InputError(
                f"{rel}: the pixel-size CSV cannot tell which row is this file's: it lists "
                f"{', '.join(sorted(keys))} and several inputs or rows are called {base!r}; "
                "list each by its path relative to the input folder"
            )
        return keys[0]

    def lookup(self, name: str, shared_basenames: Collection[str] = ()) -> float:
        """Pixel size of an input or :class:`InputError` naming it."""
        key = self.key_for(name, shared_basenames)
        if key in self.problems:
            raise InputError(f"{_norm_key(name)}: {self.problems[key]}")
        return self.pixel_size_mm[key]


def _columns(header: list[str]) -> tuple[int | None, int | None, int | None, list[str]]:
    """Indices of the file-name, pixel-size and HC columns, and the other columns."""
    cols = [c.strip().lower() for c in header]
    i_name = next((i for i, c in enumerate(cols) if c in ("filename", "file", "image")), None)
    i_px = next(
        (i for i, c in enumerate(cols) if "pixel" in c and "size" in c and "source" not in c),
        None,
    )
    i_hc = next((i for i, c in enumerate(cols) if "circumference" in c), None)
    other = [c for i, c in enumerate(header) if i not in (i_name, i_px, i_hc) and c.strip()]
    return i_name, i_px, i_hc, other


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read pixel-size CSV ({exc.strerror or exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{path}: pixel-size CSV is empty")
    delim = max([",", ";", "\t"], key=lines[0].count)
    return list(csv.reader(lines, delimiter=delim))


def read_pixel_size_csv(path: str | os.PathLike[str]) -> PixelSizeTable:
    """Read an HC18-style pixel-size CSV robustly.

    Accepts a UTF-8 BOM, ``,`` ``;`` or tab separators, CRLF line ends and a
    missing trailing newline. The columns are found by name (``filename`` and a
    column containing ``pixel size``; optionally ``head circumference``).
    Rows with a bad value, and names listed twice with different values, are
    recorded in ``problems`` and raise only when that file is looked up.

    Raises:
        InputError: If the file cannot be read or lacks the needed columns.

    """
    p = Path(path)
    rows = _rows(p)
    i_name, i_px, i_hc, _ = _columns(rows[0])
    if i_name is None or i_px is None:
        raise InputError(
            f"{p}: pixel-size CSV needs columns 'filename' and 'pixel size(mm)', got {rows[0]}"
        )
    sizes: dict[str, float] = {}
    hcs: dict[str, float] = {}
    problems: dict[str, str] = {}
    for row in rows[1:]:
        if len(row) <= max(i_name, i_px) or not row[i_name].strip():
            continue
        name = _norm_key(row[i_name])
        try:
            value = validate_pixel_size(row[i_px].strip(), f"{p.name} row for {name}")
        except InputError as exc:
            problems[name] = str(exc)
            continue
        if name in sizes and not math.isclose(sizes[name], value):
            problems[name] = f"listed twice in {p.name} with different pixel sizes"
            del sizes[name]
            continue
        if name in problems:
            continue
        sizes[name] = value
        if i_hc is not None and len(row) > i_hc:
            with contextlib.suppress(ValueError):
                hcs[name] = float(row[i_hc])
    return PixelSizeTable(sizes, hcs, problems, p)


def is_pixel_size_table(path: Path) -> bool:
    """Whether a CSV is a pixel-size table and nothing else.

    Its header must name a file column and a pixel-size column, and any other
    column must be a head circumference (HC18's two layouts). A results table
    such as fetalhead's own ``predictions.csv``, which also has a file name and
    a pixel size among many other columns, is not one.
    """
    try:
        header = _rows(path)[0]
    except InputError:
        return False
    i_name, i_px, _, other = _columns(header)
    return i_name is not None and i_px is not None and not other


def find_pixel_size_table(root: Path) -> Path | None:
    """The pixel-size table of a labelled folder: inside it, or HC18's file beside it.

    Candidates are the folder's ``*.csv`` and ``<folder>*pixel_size*.csv`` beside
    it (HC18's ``training_set_pixel_size_and_HC.csv``); only those that are
    pixel-size tables (:func:`is_pixel_size_table`) count.

    Raises:
        InputError: If two or more candidates qualify; the message names them.

    """
    cands = sorted({*root.glob("*.csv"), *root.parent.glob(f"{root.name}*pixel_size*.csv")})
    tables = [c for c in cands if is_pixel_size_table(c)]
    if len(tables) > 1:
        raise InputError(
            f"{root}: several pixel-size tables found ({', '.join(str(t) for t in tables)}); "
            "keep one, or name it explicitly"
        )
    return tables[0] if tables else None
