"""Measuring folders of images: streaming, resumable, never losing a row.

Decoding and preprocessing run in a small thread pool ahead of inference, or,
with ``processes > 1``, worker processes each decode, infer and post-process
their own chunks of files, so that one's decoding and post-processing overlap
the others' inference without threads competing for the same cores. Either
way a folder of thousands of images streams with bounded memory. Each
finished row is appended to ``predictions.csv`` in a single write and flushed,
in input order, so an interrupted run leaves a valid CSV of the rows it
finished, and ``--resume`` skips them.
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
from fetalhead.model import Checkpoint
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
    processes: int = 1
    threads: int | None = None
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
    pool: MeasuringPool | None = None,
) -> BatchSummary:
    """Measure ``inputs`` and write predictions, overlays, masks and a run record.

    With ``opts.processes > 1`` (and more than one batch of files) the work runs
    in a :class:`MeasuringPool` of that many processes, started for this run;
    pass ``pool`` to reuse one that is already running.
    """
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

    def handle(ev: _Event) -> None:
        if ev.log is not None:
            logger.log(*ev.log)
        if ev.row is not None:
            writer.write(ev.row)
            rows.append(ev.row)
        bar.update(ev.files_done)

    own_pool = None
    try:
        if pool is None and opts.processes > 1 and len(todo) > opts.batch_size:
            pool = own_pool = MeasuringPool(measurer, opts.processes, opts.threads)
        if pool is not None:
            chunks = [todo[i : i + opts.batch_size] for i in range(0, len(todo), opts.batch_size)]
            for events in pool.map_chunks(chunks, sizes, opts):
                for ev in events:
                    handle(ev)
        else:
            decoded = prefetch(todo, _decode, opts.workers, ahead=2 * opts.batch_size)
            for ev in _measure_stream(measurer, decoded, sizes, opts):
                handle(ev)
    except (KeyboardInterrupt, _Terminated):
        logger.error("interrupted: %d rows saved in %s; rerun with --resume", len(rows), pred_path)
        raise KeyboardInterrupt from None
    finally:
        if own_pool is not None:
            own_pool.close()
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


#: Smallest folder for which ``default_processes`` starts worker processes: each
#: imports torch and loads the model (a few seconds), which small folders do not repay.
MIN_FILES_FOR_PROCESSES = 64


def default_processes(backend_name: str, n_files: int) -> int:
    """Worker processes for a run: 2 for torch backends on 2+ cores and big folders.

    On the 2-core benchmark machine two single-threaded processes measured
    about 1.2x more images/s than one two-threaded process for PyTorch (fp32
    and bfloat16), and nothing more for ONNX Runtime (``benchmarks/README.md``).
    """
    cores = os.cpu_count() or 1
    if backend_name.startswith("torch") and cores >= 2 and n_files >= MIN_FILES_FOR_PROCESSES:
        return 2
    return 1


@dataclass
class _Event:
    """Something a measuring loop reports: a finished row, a log line, files done."""

    row: dict[str, Any] | None = None
    log: tuple[int, str] | None = None
    files_done: int = 0


def _measure_stream(
    measurer: HeadMeasurer, decoded: Iterable[Decoded], sizes: PixelSizes, opts: BatchOptions
) -> Iterator[_Event]:
    """Measure decoded files in network batches; write their overlays and masks.

    Yields, in input order, one event per row (with its log line) and one per
    file taken in. Rows of a file come after its event, once its batch is done.
    """
    from fetalhead.overlay import draw_overlay, encode_png

    out = opts.out_dir
    pending: list[tuple[LoadedImage, float, str, str]] = []

    def finish(m: Measurement, loaded: LoadedImage | None) -> _Event:
        stem = Path(m.filename).with_suffix("").as_posix().replace("/", "__")
        if m.frame is not None:
            stem += f"_f{m.frame:03d}"
        if loaded is not None and opts.overlays:
            atomic_write_bytes(
                out / "overlays" / f"{stem}.png", encode_png(draw_overlay(loaded.pixels, m))
            )
        if loaded is not None and opts.save_masks and m.mask is not None:
            atomic_write_bytes(out / "masks" / f"{stem}_mask.png", encode_png(m.mask * 255))
        log = None
        if m.error:
            log = (logging.ERROR, m.error)
        elif m.qc != "ok":
            log = (logging.WARNING, f"{m.filename}: qc {m.qc}")
        return _Event(row=m.to_row(), log=log)

    def flush() -> Iterator[_Event]:
        if not pending:
            return
        results = measurer.measure_batch(
            [p[0].pixels for p in pending], [p[1] for p in pending], [p[3] for p in pending]
        )
        for (loaded, _px, source, _name), m in zip(pending, results, strict=True):
            m.frame = loaded.frame
            m.pixel_size_source = source
            choose_dicom_region(m, loaded)
            yield finish(m, loaded)
        pending.clear()

    for dec in decoded:
        if dec.error is not None:
            yield finish(unreadable(dec.file.name, dec.error), None)
        for loaded in dec.frames:
            try:
                px, source = sizes.resolve(dec.file.name, loaded)
            except InputError as exc:
                m = Measurement(
                    dec.file.name, frame=loaded.frame, qc="no_pixel_size", error=str(exc)
                )
                yield finish(m, None)
                continue
            pending.append((loaded, px, source, dec.file.name))
            if len(pending) >= opts.batch_size:
                yield from flush()
        yield _Event(files_done=1)
    yield from flush()


_worker_measurer: HeadMeasurer | None = None


def _init_worker(
    parent: int,
    checkpoint: Checkpoint,
    settings: dict[str, Any],
    threads: int,
    weights_path: Path | None,
) -> None:
    global _worker_measurer
    # Ctrl-C reaches the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    _worker_measurer = HeadMeasurer(
        checkpoint, threads=threads, weights_path=weights_path, **settings
    )


def _exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this worker soon after its parent dies (killed with SIGKILL, say).

    Orphaned workers would otherwise keep running, and keep the parent's
    stdout and stderr open. ``parent`` is the pid the pool recorded: a worker
    still importing torch when its parent died has already been re-parented,
    so its own ``os.getppid()`` would name the wrong process.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_chunk(task: tuple[list[InputFile], PixelSizes, BatchOptions]) -> list[_Event]:
    files, sizes, opts = task
    if _worker_measurer is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("measuring worker was not initialised")
    return list(_measure_stream(_worker_measurer, map(_decode, files), sizes, opts))


class MeasuringPool:
    """Worker processes that each hold a copy of a measurer.

    Each worker decodes, infers and post-processes whole chunks of files with
    ``cores // processes`` threads. On a CPU this beats one process whose
    decoding threads compete with its inference threads: the network's
    threads then wait for each other at every layer. Workers are started with
    ``spawn``, so a script that creates a pool must guard its entry point with
    ``if __name__ == "__main__":``.

    Args:
        measurer: The measurer to copy (its checkpoint and settings).
        processes: Number of worker processes (at least 2 to be useful).
        threads: CPU threads in all (default: all cores), shared out evenly.

    """

    def __init__(self, measurer: HeadMeasurer, processes: int, threads: int | None = None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        total = threads or os.cpu_count() or 1
        self.processes = processes
        self.threads_per_process = max(1, total // processes)
        # spawn: forking a process whose OpenMP threads are running can deadlock.
        self._executor = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(
                os.getpid(),
                measurer.checkpoint,
                measurer.settings,
                self.threads_per_process,
                measurer.weights_path,
            ),
        )

    def map_chunks(
        self, chunks: list[list[InputFile]], sizes: PixelSizes, opts: BatchOptions
    ) -> Iterator[list[_Event]]:
        """Measure chunks of files in the workers; yield their events in input order.

        Raises:
            concurrent.futures.process.BrokenProcessPool: If a worker died (the
                rows already yielded are kept; the run can be resumed).

        """
        return self._executor.map(_worker_chunk, [(c, sizes, opts) for c in chunks])

    def close(self) -> None:
        """Stop the workers once their current chunks are done; drop queued chunks."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> MeasuringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
