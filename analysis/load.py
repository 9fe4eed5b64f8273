"""Load a trace file or a directory of per-rank trace files into a ``TraceSet``.

Files are decoded by ``speedtrace.analysis.decode`` (chunked msgspec, numpy columns); a
directory's files are decoded in parallel processes, which hand their ``RankTrace`` back by
pickling (cheap for numpy columns). Ranks, world size and warnings follow metrics.md "Input".
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from functools import partial

import numpy as np

from speedtrace.analysis.decode import NotATraceError, file_kind, read_rank_trace
from speedtrace.analysis.events import COLUMNS, GPU_ACTIVITY, EventTable, RankTrace, TraceSet
from speedtrace.errors import SpeedtraceError, warn
from speedtrace.profiling import runinfo

RUN_JSON = "run.json"
TRACE_SUFFIXES = (".json", ".json.gz")
# Loads bigger than this show progress when stderr is a terminal.
PROGRESS_MIN_BYTES = 50_000_000

__all__ = ["discover", "load", "load_rank_file"]


def discover(path) -> tuple[list[str], dict | None, list[str]]:
    """The trace files to read for PATH, the ``run.json`` beside them (or None), and warnings.

    A file is returned as is (anything but a regular file is an error). For a directory: every
    ``*.json``/``*.json.gz`` in it except ``run.json`` (sorted by name; whether each one is a
    trace is decided when it is read). Its subdirectories are not read: a warning names those
    holding trace files. Broken or looping links and non-regular files are skipped with a warning.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SpeedtraceError(f"{path}: {_stat_problem(path, e)}") from None
    if not stat.S_ISDIR(mode):
        if not stat.S_ISREG(mode):
            raise SpeedtraceError(f"{path}: not a regular file ({file_kind(mode)}); "
                                  "give a trace file or a directory of them")
        return [path], None, []
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda d: d.name)
    except OSError as e:
        raise SpeedtraceError(f"{path}: cannot list directory ({e.strerror or e})") from None
    warnings: list[str] = []
    files, subdirs = [], []
    for entry in entries:
        n, full = entry.name, os.path.join(path, entry.name)
        if not _is_trace_name(n) or n == RUN_JSON:
            if _is_dir(entry):
                subdirs.append(n)
            continue
        try:
            mode = os.stat(full).st_mode  # through a link: what it points to
        except OSError as e:
            warnings.append(f"{full}: {_stat_problem(full, e)}; skipped")
            continue
        if stat.S_ISREG(mode):
            files.append(full)
        elif stat.S_ISDIR(mode):
            subdirs.append(n)
        else:
            warnings.append(f"{full}: not a regular file ({file_kind(mode)}); skipped")
    nested = [n for n in subdirs if _holds_traces(os.path.join(path, n))]
    if not files:
        hint = f" (subdirectories {_listing(nested)} hold some: give one as PATH)" if nested else ""
        raise SpeedtraceError(f"{path}: no trace files (*.json, *.json.gz) in directory{hint}")
    if nested:
        warnings.append(f"{path}: subdirectories {_listing(nested)} hold trace files that are not "
                        "read (only the directory's own files are; give a subdirectory as PATH)")
    run = None
    run_path = os.path.join(path, RUN_JSON)
    if os.path.isfile(run_path):
        try:
            with open(run_path, "rb") as f:
                data = f.read()
        except OSError as e:
            warnings.append(f"{run_path}: unreadable run metadata, ignored ({e})")
        else:
            run, found = runinfo.read(data, run_path)
            warnings += found
    return files, run, warnings


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link; no stat call for a plain entry
    except OSError:
        return False


def _is_trace_name(name: str) -> bool:
    return name.lower().endswith(TRACE_SUFFIXES)


def _stat_problem(path: str, e: OSError) -> str:
    """Why ``os.stat`` failed, in words: a broken or looping link, or no such file."""
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if e.errno == errno.ENOENT and os.path.islink(path):
        return f"broken symbolic link (to {os.readlink(path)})"
    if e.errno == errno.ENOENT:
        return "no such file or directory"
    return f"cannot read ({e.strerror or e})"


def _holds_traces(directory: str) -> bool:
    """Whether ``directory`` has a regular ``*.json``/``*.json.gz`` file other than run.json."""
    try:
        with os.scandir(directory) as it:
            return any(_is_trace_name(d.name) and d.name != RUN_JSON and d.is_file() for d in it)
    except OSError:
        return False


def _listing(names: list[str], most: int = 3) -> str:
    """'a/, b/, c/ and 2 more' for subdirectory names."""
    shown = ", ".join(f"{n}/" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def load_rank_file(path) -> RankTrace:
    """Read one trace file in this process. Without rank metadata the rank is 0."""
    trace = read_rank_trace(os.fspath(path))
    if trace.rank < 0:
        trace.rank = 0
    return trace


def load(path, *, workers: int | None = None, progress: bool | None = None,
         echo_warnings: bool = True) -> TraceSet:
    """Load a trace file (``.json``/``.json.gz``) or a directory of per-rank trace files.

    ``workers``: processes decoding files at once (default: one per file, up to the CPU count).
    ``progress``: report files and bytes done on stderr (default: for loads over 50 MB when
    stderr is a terminal). Raises ``SpeedtraceError`` for bad input; warnings are kept in
    ``TraceSet.warnings`` and printed on stderr unless ``echo_warnings`` is off (the commands
    print them once, with their own output).
    """
    path = os.fspath(path)
    files, run, warnings = discover(path)
    is_dir = os.path.isdir(path)
    sizes = [_size(f) for f in files]
    if progress is None:
        progress = sum(sizes) > PROGRESS_MIN_BYTES and sys.stderr.isatty()
    meter = _Progress(len(files), sum(sizes)) if progress else None

    if workers is None:
        workers = min(len(files), _cpus())
    workers = max(1, min(int(workers), len(files)))
    try:
        if workers == 1:
            results = [_read_in_process(f, s, meter, explicit=not is_dir)
                       for f, s in zip(files, sizes)]
        else:
            results = _read_in_pool(files, sizes, workers, meter)
    finally:
        if meter:
            meter.close()

    ranks: list[RankTrace] = []
    for res in results:
        if isinstance(res, str):  # a JSON in the directory that is not a trace
            warnings.append(f"{res}; skipped")
        else:
            ranks.append(res)
            warnings += res.warnings  # what the decoder excluded from this file, and why
    if not ranks:
        raise SpeedtraceError(f"{path}: no trace files (only non-trace JSON) in directory")
    warnings += _assign_ranks(ranks)
    if is_dir:
        warnings += _missing_ranks(ranks)
    for r in ranks:
        if not np.isin(r.events.cat, GPU_ACTIVITY).any():
            warnings.append(f"{r.path}: no GPU events (kernel, memcpy, memset) in the trace")
    if echo_warnings:
        for w in warnings:
            warn(w)
    return TraceSet(path=path, ranks=ranks, run=run, warnings=warnings)


# ---------------------------------------------------------------------------- helpers


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_or_skip(path: str) -> RankTrace | str:
    """The trace, or the reason text when the file is not a trace (skipped in a directory)."""
    try:
        return read_rank_trace(path)
    except NotATraceError as e:
        return str(e)


# ---------------------------------------------------------------------------- worker hand-off
# A worker's columns go back to the parent through a temporary file rather than the result
# pipe: pickling would copy them once in the worker and once more in the parent before
# unpickling, about 2x the columns on top of the table the parent keeps. Through the file,
# the worker writes straight from its arrays and the parent reads straight into its own.


def _worker(path: str, spill_dir: str):
    """Worker entry: (trace without columns, rows, spill file in ``spill_dir``), or the reason
    text when the file is not a trace."""
    result = _read_or_skip(path)
    if isinstance(result, str):
        return result
    import tempfile

    table = result.events
    fd, spill = tempfile.mkstemp(suffix=".columns", dir=spill_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            for key in COLUMNS:
                f.write(getattr(table, key).data)
    except BaseException:
        os.unlink(spill)
        raise
    result.events = EventTable.empty()
    result.events.names = table.names
    return result, len(table), spill


def _receive(item):
    """The parent's side of ``_worker``: the trace with its columns read back."""
    if isinstance(item, str):
        return item
    trace, rows, spill = item
    try:
        cols = {}
        with open(spill, "rb") as f:
            for key, dtype in COLUMNS.items():
                col = np.empty(rows, dtype)
                if f.readinto(col.data.cast("B")) != col.nbytes:
                    raise SpeedtraceError(f"{trace.path}: loader hand-off file was cut short")
                cols[key] = col
    finally:
        os.unlink(spill)
    trace.events = EventTable(**cols, names=trace.events.names)
    return trace


def _read_in_process(path: str, size: int, meter, *, explicit: bool) -> RankTrace | str:
    if explicit:  # given as PATH, a non-trace file is an error
        on_bytes = meter.file_fraction(size) if meter else None
        result = _guard(path, lambda: read_rank_trace(path, on_bytes=on_bytes))
    else:
        result = _guard(path, lambda: _read_or_skip(path))
    if meter:
        meter.file_done(path, size)
    return result


def _guard(path: str, fn):
    try:
        return fn()
    except SpeedtraceError:
        raise
    except MemoryError:
        raise SpeedtraceError(f"{path}: out of memory while reading the trace") from None
    except Exception as e:  # never a traceback for bad input
        raise SpeedtraceError(f"{path}: cannot read trace ({type(e).__name__}: {e})") from None


def _read_in_pool(files, sizes, workers, meter) -> list:
    # Imported here: a single-file load never needs them.
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork shares the imported modules with the workers at no cost; macOS and Windows
    # cannot fork safely, so they spawn.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    results: list = [None] * len(files)
    # The hand-off files live in a directory of this call, removed whatever happens (a worker
    # may finish writing one after another worker failed).
    spill_dir = tempfile.mkdtemp(prefix="speedtrace-load-")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # Biggest files first, so a large one does not start last and run alone.
            order = sorted(range(len(files)), key=lambda i: -sizes[i])
            futures = {pool.submit(_worker, files[i], spill_dir): i for i in order}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = futures[fut]
                        results[i] = _guard(files[i], partial(_receive_future, files[i], fut))
                        if meter:
                            meter.file_done(files[i], sizes[i])
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    return results


def _receive_future(path: str, fut):
    from concurrent.futures.process import BrokenProcessPool

    try:
        item = fut.result()
    except BrokenProcessPool:
        raise SpeedtraceError(f"{path}: a loader process died (out of memory?)") from None
    return _receive(item)


def _assign_ranks(ranks: list[RankTrace]) -> list[str]:
    """Resolve unknown ranks, reject duplicates, and sort ``ranks`` in place."""
    warnings = []
    unknown = [r for r in ranks if r.rank < 0]
    if unknown and len(ranks) > 1:
        names = ", ".join(r.path for r in unknown)
        raise SpeedtraceError(
            f"{names}: no rank (no distributedInfo.rank and no rank-N in the file name) "
            "in a set of several traces"
        )
    if unknown:
        unknown[0].rank = 0
        warnings.append(f"{unknown[0].path}: no rank metadata; assuming rank 0")
    by_rank: dict[int, list[str]] = {}
    for r in ranks:
        by_rank.setdefault(r.rank, []).append(r.path)
    dup = {k: v for k, v in by_rank.items() if len(v) > 1}
    if dup:
        k, paths = min(dup.items())
        raise SpeedtraceError(f"{', '.join(paths)}: several files claim rank {k}")
    ranks.sort(key=lambda r: r.rank)
    return warnings


def _missing_ranks(ranks: list[RankTrace]) -> list[str]:
    world = max((r.world_size or 0 for r in ranks), default=0)
    have = {r.rank for r in ranks}
    missing = [k for k in range(world) if k not in have]
    if not missing:
        return []
    where = os.path.dirname(ranks[0].path) or "."
    return [
        f"{where}: trace set has {len(have)} of world_size {world} ranks; "
        f"missing {_ranges(missing)}"
    ]


def _ranges(values: list[int]) -> str:
    """'1-3, 7' for [1, 2, 3, 7]."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


class _Progress:
    """One self-overwriting stderr line: files done and megabytes read."""

    def __init__(self, files: int, total_bytes: int):
        self.files, self.total = files, max(total_bytes, 1)
        self.done_files = self.done_bytes = 0
        self._file_bytes = 0  # bytes of the file being read in this process
        self._last = 0.0

    def file_fraction(self, size: int):
        """A callback for ``read_rank_trace(on_bytes=...)`` while a file of ``size`` is read."""

        def on_bytes(done: int, total: int) -> None:
            self._file_bytes = size * done // max(total, 1)
            self._show()

        return on_bytes

    def file_done(self, path: str, size: int) -> None:
        self.done_files += 1
        self.done_bytes += size
        self._file_bytes = 0
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        mb = (self.done_bytes + self._file_bytes) / 1e6
        print(
            f"\rspeedtrace: loading traces: {self.done_files}/{self.files} files, "
            f"{min(mb, self.total / 1e6):.0f}/{self.total / 1e6:.0f} MB",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        print(file=sys.stderr, flush=True)
