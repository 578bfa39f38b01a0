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

from fetalhead import __version__
from fetalhead.image import InputError, LoadedImage
from fetalhead.measure import PREDICTION_COLUMNS, Measurement, unreadable
from fetalhead.model import Checkpoint
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import DICOM_SUFFIXES, IMAGE_SUFFIXES, is_label_file, read_image
from fetalhead.readers.tables import PixelSizeTable, read_pixel_size_csv, validate_pixel_size
from fetalhead.spacing import ResolvedSpacing, resolve_pixel_size
from fetalhead.write.atomic import atomic_write_bytes, atomic_writer
from fetalhead.write.tables import (
    RowWriter,
    completed_files,
    keep_only_files,
    read_predictions,
    write_submission,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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
                if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES or suffix == "":
                    found.append(InputFile(fp, fp.relative_to(p).as_posix()))
    if not found:
        raise InputError(
            f"{', '.join(str(p) for p in paths)}: no images found "
            f"(looked for {', '.join(IMAGE_SUFFIXES)}, .dcm and DICOM without a suffix)"
        )
    return found


@dataclass
class PixelSizes:
    """Where pixel sizes come from: one value for all, a CSV, or the files.

    Attributes:
        value_mm: ``--pixel-size`` for every file.
        table: ``--pixel-size-csv``.
        shared_basenames: File names that several inputs have (a bare name in the
            table cannot identify them).

    """

    value_mm: float | None = None
    table: PixelSizeTable | None = None
    shared_basenames: frozenset[str] = frozenset()

    @classmethod
    def from_options(
        cls, value: float | None, csv_path: str | None, inputs: list[InputFile] | None = None
    ) -> PixelSizes:
        """Build from the command-line options and the inputs they apply to."""
        names = [Path(f.name).name for f in inputs or []]
        shared = frozenset(n for n in set(names) if names.count(n) > 1)
        if value is not None:
            return cls(value_mm=validate_pixel_size(value, "--pixel-size"))
        return cls(
            table=read_pixel_size_csv(csv_path) if csv_path else None, shared_basenames=shared
        )

    def resolve(self, name: str, loaded: LoadedImage) -> ResolvedSpacing:
        """The spacing of a file (:func:`fetalhead.spacing.resolve_pixel_size`)."""
        return resolve_pixel_size(
            name,
            loaded,
            cli_mm=self.value_mm,
            table=self.table,
            shared_basenames=self.shared_basenames,
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


@dataclass
class BatchOptions:
    """Options of a batch prediction run."""

    out_dir: Path
    save_masks: bool = False
    overlays: bool = False
    submission: Path | None = None
    sr_dir: Path | None = None
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 8
    workers: int = 2
    processes: int = 1
    threads: int | None = None
    progress: bool = True
    num_parts: int = 1
    part_id: int = 0


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


def select_part(inputs: list[InputFile], num_parts: int, part_id: int) -> list[InputFile]:
    """Part ``part_id`` of ``num_parts`` of the inputs: every ``num_parts``-th file.

    Deterministic for the same inputs, so that machines of a Slurm array or a
    Kubernetes job can each take one part; ``fetalhead merge`` joins them.

    Raises:
        InputError: If the part is not one of ``0 .. num_parts - 1``.

    """
    if num_parts < 1:
        raise InputError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise InputError(f"--part-id must be in 0..{num_parts - 1}, got {part_id}")
    return inputs[part_id::num_parts]


def check_output_dir(out: Path, inputs: list[InputFile], resume: bool, overwrite: bool) -> None:
    """Refuse to write into a used folder without --resume/--overwrite, or over inputs."""
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: choose one")
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


def check_columns(pred_path: Path, columns: list[str]) -> None:
    """Refuse to resume a predictions table whose header is not this version's.

    Its rows would be appended under the wrong columns.
    """
    if not pred_path.exists() or pred_path.stat().st_size == 0:
        return
    with open(pred_path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    if header != columns:
        missing = [c for c in columns if c not in header]
        raise InputError(
            f"{pred_path}: its columns are not those this fetalhead writes (missing: "
            f"{', '.join(missing) or 'none'}; it was written by another version); "
            "resume into it with that version, or write to a new --out"
        )


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
    if opts.resume:
        check_columns(pred_path, PREDICTION_COLUMNS)
    earlier = read_predictions(pred_path) if opts.resume else []
    done = completed_files(earlier)
    if earlier:
        dropped = keep_only_files(pred_path, earlier, done)
        if dropped:
            logger.warning(
                "resuming: %d rows of files with missing frames dropped; they are redone", dropped
            )
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
        for log in ev.logs:
            logger.log(*log)
        if ev.rows:
            writer.write_many(ev.rows)
            rows.extend(ev.rows)
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
        "n_files_done": len(completed_files(all_rows)),
        "n_rows": len(all_rows),
        "part": {"id": opts.part_id, "num_parts": opts.num_parts},
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


def merge_parts(parts: list[Path], out: Path, submission: Path | None = None) -> int:
    """Join the output folders of a run split with ``--num-parts``.

    Every part must be present once (ids ``0 .. N-1`` of the same N, read from
    each ``run.json``) and finished: its ``run.json`` says every one of its
    inputs is done, and its ``predictions.csv`` agrees. No file may appear in
    two parts. Rows are written sorted by file name and frame.

    Returns:
        The number of rows written.

    Raises:
        InputError: If a part is missing, unfinished, repeated or overlaps another.

    """
    seen: dict[int, Path] = {}
    totals = set()
    rows: list[dict[str, str]] = []
    owner: dict[str, Path] = {}
    for part in parts:
        try:
            record = json.loads((part / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{part}: no readable run.json ({exc}); did this part finish?"
            ) from None
        info = record.get("part") or {"id": 0, "num_parts": 1}
        pid, total = int(info["id"]), int(info["num_parts"])
        totals.add(total)
        if pid in seen:
            raise InputError(f"{part}: part {pid} is also in {seen[pid]}")
        seen[pid] = part
        part_rows = read_predictions(part / "predictions.csv")
        done = completed_files(part_rows)
        if len(done) < int(record.get("n_inputs", -1)):
            raise InputError(
                f"{part}: part {pid} is unfinished ({len(done)} of {record.get('n_inputs')} "
                "files done); rerun it with --resume"
            )
        for name in done:
            if name in owner:
                raise InputError(f"{name}: in both {owner[name]} and {part}")
            owner[name] = part
        rows += [r for r in part_rows if r["filename"] in done]
    if len(totals) != 1:
        raise InputError(f"the parts come from runs split differently: num_parts {sorted(totals)}")
    total = totals.pop()
    missing = sorted(set(range(total)) - set(seen))
    if missing:
        raise InputError(f"parts {missing} of {total} are missing")
    rows.sort(key=lambda r: (r["filename"], int(r["frame"]) if r.get("frame") else -1))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out / "predictions.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in PREDICTION_COLUMNS})
    if submission is not None:
        write_submission(rows, submission)
    return len(rows)


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
    """A file finished by a measuring loop: all its rows, with their log lines."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    logs: list[tuple[int, str]] = field(default_factory=list)
    files_done: int = 0


@dataclass
class _FileState:
    event: _Event
    frames_left: int


def _measure_stream(
    measurer: HeadMeasurer, decoded: Iterable[Decoded], sizes: PixelSizes, opts: BatchOptions
) -> Iterator[_Event]:
    """Measure decoded files in network batches; write their overlays and masks.

    Yields one event per file, in input order, once every frame of the file is
    measured, so that a file's rows reach the table together: an interrupted run
    never leaves a multi-frame file half done.
    """
    from fetalhead.write.overlay import draw_overlay, encode_png

    out = opts.out_dir
    pending: list[tuple[LoadedImage, ResolvedSpacing, str]] = []
    files: dict[str, _FileState] = {}  # insertion order is input order

    def record(m: Measurement, loaded: LoadedImage | None) -> None:
        stem = Path(m.filename).with_suffix("").as_posix().replace("/", "__")
        if m.frame is not None:
            stem += f"_f{m.frame:03d}"
        if loaded is not None and (opts.overlays or opts.save_masks):
            if opts.overlays:
                atomic_write_bytes(
                    out / "overlays" / f"{stem}.png", encode_png(draw_overlay(loaded.pixels, m))
                )
            if opts.save_masks and m.mask is not None:
                atomic_write_bytes(out / "masks" / f"{stem}_mask.png", encode_png(m.mask * 255))
        state = files[m.filename]
        if opts.sr_dir is not None and loaded is not None:
            note = _write_sr(m, loaded, measurer, opts.sr_dir / f"{stem}_sr.dcm")
            if note:
                state.event.logs.append((logging.WARNING, note))
        if m.error:
            state.event.logs.append((logging.ERROR, m.error))
        elif m.qc != "ok":
            state.event.logs.append((logging.WARNING, f"{m.filename}: qc {m.qc}"))
        state.event.rows.append(m.to_row())
        state.frames_left -= 1

    def finished() -> Iterator[_Event]:
        while files:
            name, state = next(iter(files.items()))
            if state.frames_left > 0:
                return
            del files[name]
            yield state.event

    def flush() -> Iterator[_Event]:
        if pending:
            results = measurer.measure_frames(
                [p[0] for p in pending], [p[1] for p in pending], [p[2] for p in pending]
            )
            for (loaded, _, _), m in zip(pending, results, strict=True):
                record(m, loaded)
            pending.clear()
        yield from finished()

    for dec in decoded:
        name = dec.file.name
        files[name] = _FileState(_Event(files_done=1), max(1, len(dec.frames)))
        if dec.error is not None:
            record(unreadable(name, dec.error), None)
        for loaded in dec.frames:
            try:
                spacing = sizes.resolve(name, loaded)
            except InputError as exc:
                record(
                    Measurement(
                        name,
                        frame=loaded.frame,
                        n_frames=loaded.n_frames,
                        qc="no_pixel_size",
                        error=str(exc),
                    ),
                    None,
                )
                continue
            pending.append((loaded, spacing, name))
            if len(pending) >= opts.batch_size:
                yield from flush()
        yield from finished()
    yield from flush()


def _write_sr(
    m: Measurement, loaded: LoadedImage, measurer: HeadMeasurer, path: Path
) -> str | None:
    """Write a frame's DICOM SR (also when no head was found); return why none was written."""
    from fetalhead.write.sr import build_sr

    if loaded.header is None:
        return (
            f"{m.filename}: not a DICOM file, so no SR: a report needs the source's patient, "
            "study and instance identity, which fetalhead never makes up"
        )
    try:
        sr = build_sr(
            loaded.header,  # type: ignore[arg-type]
            m,
            weights_sha256=measurer.weights_sha256,
            interval_level=measurer.settings.get("interval_level"),
        )
    except InputError as exc:
        return str(exc)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    atomic_write_bytes(path, buf.getvalue())
    return None


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


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
