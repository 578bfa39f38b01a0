"""Measuring folders of images: streaming, resumable, never losing a row.

Decoding and preprocessing run in a small thread pool ahead of inference, so a
folder of thousands of images streams with bounded memory. Each finished row
is appended to ``predictions.csv`` in a single write and flushed, so an
interrupted run leaves a valid CSV of the rows it finished, and ``--resume``
skips them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import platform
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fetalhead import __version__
from fetalhead.io import (
    IMAGE_SUFFIXES,
    InputError,
    LoadedImage,
    PixelSizeTable,
    atomic_write_bytes,
    atomic_writer,
    is_label_file,
    read_image,
    read_pixel_size_csv,
    validate_pixel_size,
)
from fetalhead.predict import (
    PREDICTION_COLUMNS,
    HeadMeasurer,
    Measurement,
    choose_dicom_region,
    unreadable,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SUBMISSION_COLUMNS = [
    "filename",
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
]


@dataclass(frozen=True)
class InputFile:
    """A file to measure and the name it is reported under."""

    path: Path
    name: str


def collect_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files and folders into the images to measure.

    Folders are walked recursively without following symlinked folders (so
    symlink loops are harmless). Label files (``*_Annotation.png``,
    ``*_Mask.png``), hidden files and files that are clearly not images (by
    suffix) are skipped; files without a suffix are kept (DICOM is detected by
    content). Names are reported relative to the folder given.

    Raises:
        InputError: If a path does not exist or nothing to measure is found.

    """
    found: list[InputFile] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.append(InputFile(p, p.name))
            continue
        if not p.is_dir():
            raise InputError(f"{p}: no such file or folder")
        for root, dirs, files in os.walk(p, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                fp = Path(root) / f
                suffix = fp.suffix.lower()
                if f.startswith(".") or is_label_file(fp):
                    continue
                if suffix in IMAGE_SUFFIXES or suffix in (".dcm", ".dicom") or suffix == "":
                    found.append(InputFile(fp, fp.relative_to(p).as_posix()))
    if not found:
        raise InputError(
            f"{', '.join(str(p) for p in paths)}: no images found "
            f"(looked for {', '.join(IMAGE_SUFFIXES)}, .dcm and DICOM without a suffix)"
        )
    return found


@dataclass
class PixelSizes:
    """Where pixel sizes come from: one value for all, a CSV, or the files."""

    value_mm: float | None = None
    table: PixelSizeTable | None = None

    @classmethod
    def from_options(cls, value: float | None, csv_path: str | None) -> PixelSizes:
        if value is not None:
            return cls(value_mm=validate_pixel_size(value, "--pixel-size"))
        return cls(table=read_pixel_size_csv(csv_path) if csv_path else None)

    def resolve(self, name: str, loaded: LoadedImage) -> tuple[float, str]:
        """Pixel size and its source for a file (CLI, then CSV, then DICOM).

        Raises:
            InputError: If no usable pixel size is known for the file.

        """
        if self.value_mm is not None:
            return self.value_mm, "cli"
        if self.table is not None:
            try:
                return self.table.lookup(name), "csv"
            except InputError:
                if loaded.pixel_size_mm is None:
                    raise
        if loaded.pixel_size_mm is not None and loaded.pixel_size_source is not None:
            return loaded.pixel_size_mm, loaded.pixel_size_source
        raise InputError(
            f"{name}: no pixel size (give --pixel-size MM or --pixel-size-csv CSV; "
            "measures are never reported in pixels)"
        )


def prefetch(items: Iterable[T], fn: Callable[[T], R], workers: int, ahead: int) -> Iterator[R]:
    """Yield ``fn(item)`` in order, computing up to ``ahead`` items in threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[R]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class Decoded:
    """A decoded input file, or why it could not be decoded."""

    file: InputFile
    frames: list[LoadedImage] = field(default_factory=list)
    error: str | None = None


def _decode(file: InputFile) -> Decoded:
    try:
        return Decoded(file, read_image(file.path))
    except InputError as exc:
        return Decoded(file, error=str(exc))
    except Exception as exc:  # a decoder bug must not end the batch
        logger.debug("decoder failure", exc_info=True)
        return Decoded(file, error=f"{file.path}: cannot decode ({type(exc).__name__}: {exc})")


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

    def _write(self, values: list[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self.fh.write(buf.getvalue())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write(self, row: dict[str, Any]) -> None:
        self._write([_fmt(row.get(c)) for c in self.columns])

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


@dataclass
class BatchOptions:
    """Options of a batch prediction run."""

    out_dir: Path
    save_masks: bool = False
    overlays: bool = False
    submission: Path | None = None
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 8
    workers: int = 2
    progress: bool = True


@dataclass
class BatchSummary:
    """What a batch run did."""

    n_files: int
    n_rows: int
    n_ok: int
    n_flagged: int
    n_unreadable: int
    n_skipped: int
    rows: list[dict[str, Any]]
    predictions_csv: Path


class _Terminated(Exception):
    pass


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(f"received signal {signum}")


def check_output_dir(out: Path, inputs: list[InputFile], resume: bool, overwrite: bool) -> None:
    """Refuse to write into a used folder without --resume/--overwrite, or over inputs."""
    out_r = out.resolve()
    for f in inputs:
        if f.path.resolve().is_relative_to(out_r):
            raise InputError(
                f"{out}: output folder contains the input {f.path}; choose another --out"
            )
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise InputError(f"{out}: folder is not empty; pass --resume to continue or --overwrite")


def run_batch(
    measurer: HeadMeasurer,
    inputs: list[InputFile],
    sizes: PixelSizes,
    opts: BatchOptions,
    run_options: dict[str, Any] | None = None,
) -> BatchSummary:
    """Measure ``inputs`` and write predictions, overlays, masks and a run record."""
    from fetalhead.overlay import draw_overlay, encode_png

    out = opts.out_dir
    check_output_dir(out, inputs, opts.resume, opts.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / "predictions.csv"
    if opts.overwrite and not opts.resume and pred_path.exists():
        pred_path.unlink()
    done = {r["filename"] for r in read_predictions(pred_path)} if opts.resume else set()
    todo = [f for f in inputs if f.name not in done]
    if done:
        logger.info("resuming: %d files already in %s", len(inputs) - len(todo), pred_path)
    started = time.time()
    writer = RowWriter(pred_path, PREDICTION_COLUMNS)
    rows: list[dict[str, Any]] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    in_main = _in_main_thread()
    if in_main:
        # Both signals stop the run cleanly, even where SIGINT was inherited as ignored.
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="measuring", unit="img", disable=not opts.progress)
    try:
        pending: list[tuple[InputFile, LoadedImage, float, str]] = []

        def flush_pending() -> None:
            if not pending:
                return
            results = measurer.measure_batch(
                [p[1].pixels for p in pending],
                [p[2] for p in pending],
                [p[0].name for p in pending],
            )
            for (_file, loaded, _px, source), m in zip(pending, results, strict=True):
                m.frame = loaded.frame
                m.pixel_size_source = source
                choose_dicom_region(m, loaded)
                emit(m, loaded)
            pending.clear()

        def emit(m: Measurement, loaded: LoadedImage | None) -> None:
            row = m.to_row()
            stem = Path(m.filename).with_suffix("").as_posix().replace("/", "__")
            if m.frame is not None:
                stem += f"_f{m.frame:03d}"
            if loaded is not None and opts.overlays:
                atomic_write_bytes(
                    out / "overlays" / f"{stem}.png", encode_png(draw_overlay(loaded.pixels, m))
                )
            if loaded is not None and opts.save_masks and m.mask is not None:
                atomic_write_bytes(out / "masks" / f"{stem}_mask.png", encode_png(m.mask * 255))
            if m.error:
                logger.error("%s", m.error)
            elif m.qc != "ok":
                logger.warning("%s: qc %s", m.filename, m.qc)
            writer.write(row)
            rows.append(row)

        for dec in prefetch(todo, _decode, opts.workers, ahead=2 * opts.batch_size):
            if dec.error is not None:
                emit(unreadable(dec.file.name, dec.error), None)
            for loaded in dec.frames:
                try:
                    px, source = sizes.resolve(dec.file.name, loaded)
                except InputError as exc:
                    m = Measurement(
                        dec.file.name, frame=loaded.frame, qc="no_pixel_size", error=str(exc)
                    )
                    emit(m, None)
                    continue
                pending.append((dec.file, loaded, px, source))
                if len(pending) >= opts.batch_size:
                    flush_pending()
            bar.update(1)
        flush_pending()
    except (KeyboardInterrupt, _Terminated):
        logger.error("interrupted: %d rows saved in %s; rerun with --resume", len(rows), pred_path)
        raise KeyboardInterrupt from None
    finally:
        bar.close()
        writer.close()
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    all_rows = read_predictions(pred_path)
    if opts.submission is not None:
        write_submission(all_rows, opts.submission)
    record = {
        "fetalhead_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "model": measurer.describe(),
        "options": run_options or {},
        "n_inputs": len(inputs),
        "n_rows": len(all_rows),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
    }
    with atomic_writer(out / "run.json") as fh:
        json.dump(record, fh, indent=2, default=str)
    n_unread = sum(1 for r in rows if r["qc"] in ("unreadable", "no_pixel_size"))
    n_ok = sum(1 for r in rows if r["qc"] == "ok")
    return BatchSummary(
        n_files=len(todo),
        n_rows=len(rows),
        n_ok=n_ok,
        n_flagged=len(rows) - n_ok - n_unread,
        n_unreadable=n_unread,
        n_skipped=len(inputs) - len(todo),
        rows=rows,
        predictions_csv=pred_path,
    )


def write_submission(rows: list[dict[str, str]], path: Path) -> None:
    """Write the HC18 submission CSV (one row per image; empty values if unmeasured)."""
    with atomic_writer(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SUBMISSION_COLUMNS)
        for r in rows:
            w.writerow([Path(r["filename"]).name] + [r.get(c, "") for c in SUBMISSION_COLUMNS[1:]])


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
