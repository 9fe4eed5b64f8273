"""Decode one Kineto trace file into a ``RankTrace`` without building the JSON as Python dicts.

A plain file is memory-mapped; a gzip file is decompressed whole into anonymous memory. The
``traceEvents`` array is found from the file's first bytes (the metadata before it decoded by
msgspec), then decoded in chunks of about ``CHUNK_BYTES`` into ``gc=False`` structs that name
only the fields an analysis reads; each chunk is turned into numpy columns and freed, and the
pages already decoded are handed back to the OS. The last chunk is decoded together with the
rest of the top-level object, so metadata keys after ``traceEvents`` are read too. Peak memory is
about the larger of the (uncompressed) file and its columns.

A chunk is cut just after a ``}`` that is followed by ``,`` and ``{``. Such a cut may fall inside
a string or a nested object; the chunk is then not valid JSON (an unterminated string or an
unclosed bracket), msgspec says so, and the cut moves to the next candidate. Every accepted cut
therefore lies between two top-level events.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import stat
import zlib
from collections.abc import Callable
from itertools import compress
from operator import attrgetter

import msgspec
import numpy as np

from speedtrace.analysis.events import CAT_BY_NAME, COLUMNS, Cat, DeviceInfo, EventTable, RankTrace
from speedtrace.analysis.screen import screen
from speedtrace.errors import SpeedtraceError

# Bytes of the events array decoded at once; tests shrink it to exercise the cuts.
# Small chunks keep the decoded structs (about 4x their JSON bytes) small and cost no time:
# on large traces they beat multi-megabyte chunks in both time and peak memory.
CHUNK_BYTES = 256 << 10
# Top-level values larger than this are not kept in RankTrace.metadata.
METADATA_MAX_BYTES = 64 << 10

_CUT = re.compile(rb"\}\s*,\s*\{")
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_ERROR_BYTE = re.compile(r"\(byte (\d+)\)")
_RANK_IN_NAME = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
_GZIP_MAGIC = b"\x1f\x8b"
_NAN = float("nan")
# Below 2**43 µs a parsed float64 is within 0.49 ns of the decimal Kineto wrote (3 decimals),
# so rounding its fraction to whole ns recovers the written value exactly.
_NS_EXACT_LIMIT = float(2**43)
_KEPT_CATS = {name: int(cat) for name, cat in CAT_BY_NAME.items()}


class NotATraceError(SpeedtraceError):
    """Valid JSON that is not a Kineto trace (no ``traceEvents`` list)."""


class _Args(msgspec.Struct, gc=False):
    stream: int = -1
    correlation: int = -1
    external_id: int = msgspec.field(name="External id", default=-1)
    device: int = -1
    grid: tuple[int, ...] | None = None
    block: tuple[int, ...] | None = None
    blocks_per_sm: float | str | None = msgspec.field(name="blocks per SM", default=None)
    occupancy_pct: float | str | None = msgspec.field(
        name="est. achieved occupancy %", default=None
    )
    registers: int = msgspec.field(name="registers per thread", default=-1)
    shared_memory: int = msgspec.field(name="shared memory", default=-1)
    # Collective parameters (record_param_comms; older traces copy them onto the kernel).
    collective: str | None = msgspec.field(name="Collective name", default=None)
    dtype: str | None = None
    in_nelems: int = msgspec.field(name="In msg nelems", default=-1)
    out_nelems: int = msgspec.field(name="Out msg nelems", default=-1)
    group_size: int = msgspec.field(name="Group size", default=-1)
    pg_name: str | int | None = msgspec.field(name="Process Group Name", default=None)
    pg_desc: str | None = msgspec.field(name="Process Group Description", default=None)
    pg_ranks: str | list[int] | None = msgspec.field(name="Process Group Ranks", default=None)
    # Kineto's CUDA-event wait links (cuda_sync "Stream Wait Event", newer traces).
    wait_on_stream: int = -1
    wait_on_record_corr: int = msgspec.field(name="wait_on_cuda_event_record_corr_id", default=-1)


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = -1
    tid: int | str = -1
    ts: float = _NAN  # NaN: missing (the screen excludes the event, metrics.md "Input")
    dur: float = _NAN
    args: _Args = msgspec.field(default_factory=_Args)


# Strict: a chunk with a string where a number belongs ("dur": "10") fails here and is decoded
# again by ``_coerce``, which reads such args as numbers but takes a time only from a number.
_TYPED = msgspec.json.Decoder(list[_Event])
# float_hook: a number beyond float64 (1e999) reads as inf, which the screen excludes, instead
# of failing the whole file.
_UNTYPED = msgspec.json.Decoder(float_hook=float)
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])


# ---------------------------------------------------------------------------- reading bytes


def read_bytes(path: str) -> tuple[mmap.mmap, int, bool]:
    """The file's JSON bytes as a mapping, their length, and whether they were gzip-compressed:
    a plain file memory-mapped, a gzip file decompressed into anonymous memory. The parser
    hands decoded pages of either back. Anything but a regular file is refused."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever; the mode
        # is checked on the open descriptor, so nothing can swap the file in between.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise SpeedtraceError(f"{path}: not a regular file ({file_kind(mode)}); "
                                      "give a trace file or a directory of them")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            magic = f.read(2)
            if magic == _GZIP_MAGIC:
                f.seek(0)
                return (*_gunzip(path, f.read()), True)
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise SpeedtraceError(f"{path}: empty file")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size, False
    except SpeedtraceError:
        raise
    except OSError as e:
        raise SpeedtraceError(f"{path}: cannot read ({e.strerror or e})") from None


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory'... for a stat mode, in words."""
    for test, words in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "not a regular file"


def _gunzip(path: str, data: bytes) -> tuple[mmap.mmap, int]:
    """Decompress every gzip member into an anonymous mapping; returns it and the byte count.

    A mapping (not bytes) so that the parser can hand decoded pages back as it goes, which keeps
    the peak near the decompressed size. It is sized from the gzip trailer's length field (the
    last member's only, so it doubles when too small; pages never written cost nothing) and asks
    for huge pages, which fill faster (fewer page faults).
    """
    hint = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0
    out = _anonymous(max(min(hint, len(data) * 1032), len(data) * 4, 1 << 16))
    view, pos, size, step = memoryview(data), 0, 0, 1 << 13
    try:
        while True:  # one gzip member per pass
            dec = zlib.decompressobj(wbits=31)
            while pos < len(data) and not dec.eof:
                # Small input steps keep each output piece small and cache-resident.
                piece = dec.decompress(view[pos : pos + step])
                if size + len(piece) > len(out):
                    bigger = _anonymous(max(2 * len(out), size + len(piece)))
                    bigger[:size] = out[:size]
                    out.close()
                    out = bigger
                out[size : size + len(piece)] = piece
                size += len(piece)
                pos = min(pos + step, len(data))
            if not dec.eof:
                raise EOFError("compressed file ended before the end-of-stream marker")
            pos -= len(dec.unused_data)
            if not bytes(view[pos:]).strip(b"\0"):  # trailing zero padding is allowed
                break
            if view[pos : pos + 2] != _GZIP_MAGIC:
                raise OSError("trailing garbage after the gzip stream")
    except (EOFError, OSError, zlib.error) as e:
        out.close()
        raise SpeedtraceError(f"{path}: truncated or corrupt gzip ({e})") from None
    if size == 0:
        out.close()
        raise SpeedtraceError(f"{path}: empty file (gzip of nothing)")
    return out, size


def _anonymous(size: int) -> mmap.mmap:
    out = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            out.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # not supported here: normal pages then
            pass
    return out


# ---------------------------------------------------------------------------- top level


def _split_top(path: str, buf, where: str) -> dict[str, msgspec.Raw]:
    try:
        top = _TOP.decode(buf)
    except msgspec.ValidationError:
        raise NotATraceError(f"{path}: not a trace (top level is not a JSON object)") from None
    except msgspec.DecodeError as e:
        what = "truncated JSON" if "truncated" in str(e) else "not valid JSON"
        raise SpeedtraceError(f"{path}: {what} ({_rebase(str(e), 0, where)})") from None
    raw = top.get("traceEvents")
    if raw is None or not bytes(memoryview(raw)[:1]) == b"[":
        raise NotATraceError(f"{path}: not a trace (no traceEvents list)")
    return top


def _metadata(top: dict[str, msgspec.Raw]) -> dict:
    """The top-level values other than ``traceEvents``, decoded; large ones are left out."""
    meta = {}
    for key, raw in top.items():
        if key != "traceEvents" and len(memoryview(raw)) <= METADATA_MAX_BYTES:
            meta[key] = _UNTYPED.decode(raw)
    return meta


def _as_int(v, default=None):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return default
    return default


def _as_flag(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v) if isinstance(v, (bool, int, float)) else False


def _devices(value) -> dict[int, DeviceInfo]:
    devices: dict[int, DeviceInfo] = {}
    if not isinstance(value, list):
        return devices
    for i, d in enumerate(value):
        if not isinstance(d, dict):
            continue
        dev_id = _as_int(d.get("id"), i)
        name = d.get("name")
        devices[dev_id] = DeviceInfo(
            id=dev_id,
            name=name if isinstance(name, str) else None,
            num_sms=_as_int(d.get("numSms")),
            max_threads_per_sm=_as_int(d.get("maxThreadsPerMultiprocessor")),
        )
    return devices


def rank_from_filename(path: str) -> int | None:
    """The N of a ``rank[-_]?N`` pattern in the file name, if any."""
    m = _RANK_IN_NAME.search(os.path.basename(path))
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- events


def _find_events(buf) -> tuple[dict[str, msgspec.Raw], int] | None:
    """The top-level values before ``traceEvents`` and the offset of its ``[``.

    None when the key is not found, or what precedes the match is not the start of a JSON
    object (the match is then inside a string or a nested value): the caller decodes the whole
    top level instead. Finding the array this way reads only the file's first bytes, so a
    mapped file's pages are touched one chunk at a time.
    """
    m = _EVENTS_KEY.search(buf)
    if m is None:
        return None
    head = bytes(buf[: m.start()]).strip()
    if head.endswith(b","):
        head = head[:-1]
    try:
        return _TOP.decode(head + b"}"), m.end() - 1
    except msgspec.DecodeError:
        return None


def _cut_inside_event(err: msgspec.DecodeError, size: int) -> bool:
    """Whether a chunk failed because its cut fell inside an event (unclosed string/bracket).

    Such a chunk runs out of input, or meets the closing ``]`` added after the cut where a
    nested value needed ``}``; any other error is in the trace itself or after its array.
    """
    text = str(err)
    if "truncated" in text:
        return True
    at = _ERROR_BYTE.search(text)
    return at is not None and "trailing" not in text and int(at.group(1)) >= size - 1


class _EventChunks:
    """Iterate over the events array from offset ``start`` (its ``[``) of ``view``, a chunk
    of ``_Event`` at a time; afterwards ``trailing`` holds the top-level values after it.

    The last events are decoded together with the rest of the top-level object
    (``{"traceEvents":[`` + the remaining bytes + ``close``), which both finds the array's end
    and validates everything after it.
    """

    def __init__(self, path: str, view: memoryview, start: int, close: bytes, chunk_bytes: int,
                 on_bytes=None, release=None, base: int | None = 0, where: str = "of the file"):
        self.path, self.view, self.start, self.close = path, view, start, close
        # Offset of view[0] in the file's JSON (None: unknown), and how to name that JSON.
        self.base, self.where = base, where
        self.chunk_bytes, self.on_bytes, self.release = max(chunk_bytes, 1), on_bytes, release
        self.trailing: dict[str, msgspec.Raw] = {}

    def __iter__(self):
        view, n = self.view, len(self.view)
        pos = self.start + 1
        while True:
            target = pos + self.chunk_bytes
            decoded = None
            while target < n:
                m = _CUT.search(view, target)
                if m is None:
                    break
                cut = m.start() + 1
                body = b"".join((b"[", view[pos:cut], b"]"))
                try:
                    decoded = _decode_chunk(body)
                except msgspec.DecodeError as e:
                    if _cut_inside_event(e, len(body)):
                        target = m.end() - 1  # try the next candidate
                        continue
                break  # the array ended inside this chunk, or the JSON is broken
            if decoded is None:
                break
            del body
            pos = m.end() - 1
            self._done(pos)
            yield decoded
            del decoded
        yield self._tail(pos)
        self._done(n)

    def _done(self, pos: int) -> None:
        if self.release is not None:
            self.release(pos)
        if self.on_bytes is not None:
            self.on_bytes(pos - self.start, len(self.view) - self.start)

    def _tail(self, pos: int) -> list[_Event]:
        head = b'{"traceEvents":['
        body = b"".join((head, self.view[pos:], self.close))
        try:
            top = _TOP.decode(body)
        except msgspec.DecodeError as e:
            what = "truncated JSON" if "truncated" in str(e) else "not valid JSON"
            shift = None if self.base is None else self.base + pos - len(head)
            raise SpeedtraceError(f"{self.path}: {what} in or after traceEvents "
                                  f"({_rebase(str(e), shift, self.where)})") from None
        events = top.pop("traceEvents")
        self.trailing = top
        return _decode_chunk(events)


def _rebase(text: str, shift: int | None, where: str) -> str:
    """msgspec's "(byte N)", an offset into the buffer it decoded, as "(byte N + shift <where>)":
    the offset in the file (or its decompressed JSON). Unchanged when the shift is unknown."""
    if shift is None:
        return text
    return _ERROR_BYTE.sub(lambda m: f"(byte {int(m.group(1)) + shift} {where})", text)


_RELEASE_STEP = 2 << 20


class _PageReleaser:
    """Drops decoded pages of a mapped file from this process (the OS keeps them cached), so
    the resident size follows the columns built so far rather than the file size."""

    def __init__(self, buf: mmap.mmap):
        self.buf, self.done = buf, 0

    def __call__(self, upto: int) -> None:
        # Whole 2 MB steps: a smaller release would split a huge page of the mapping.
        upto = upto // _RELEASE_STEP * _RELEASE_STEP
        if upto > self.done:
            self.buf.madvise(mmap.MADV_DONTNEED, self.done, upto - self.done)
            self.done = upto


def _decode_chunk(body: bytes) -> list[_Event]:
    try:
        return _TYPED.decode(body)
    except msgspec.ValidationError:
        # Some field has an unexpected type: decode untyped and coerce event by event.
        return [_coerce(d) for d in _UNTYPED.decode(body)]


def _num(v, kind, default):
    """``v`` as a finite float or an int64 (integral values only), else ``default``."""
    if isinstance(v, bool) or v is None:
        return default
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(x):
        return default
    if kind is float:
        return x
    if not x.is_integer():
        return default
    x = int(v) if isinstance(v, int) else int(x)
    return x if -(2**63) <= x < 2**63 else default


def _dims(v):
    if isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return tuple(v)
    return None


def _text(v):
    return v if isinstance(v, str) else None


def _coerce(d) -> _Event:
    """A tolerant ``_Event`` from a plain decoded value (wrong types become missing values)."""
    if not isinstance(d, dict):
        return _Event()
    a = d.get("args")
    a = a if isinstance(a, dict) else {}
    bps = a.get("blocks per SM")
    occ = a.get("est. achieved occupancy %")
    args = _Args(
        stream=_num(a.get("stream"), int, -1),
        correlation=_num(a.get("correlation"), int, -1),
        external_id=_num(a.get("External id"), int, -1),
        device=_num(a.get("device"), int, -1),
        grid=_dims(a.get("grid")),
        block=_dims(a.get("block")),
        blocks_per_sm=_num(bps, float, None),
        occupancy_pct=_num(occ, float, None),
        registers=_num(a.get("registers per thread"), int, -1),
        shared_memory=_num(a.get("shared memory"), int, -1),
        collective=_text(a.get("Collective name")),
        dtype=_text(a.get("dtype")),
        in_nelems=_num(a.get("In msg nelems"), int, -1),
        out_nelems=_num(a.get("Out msg nelems"), int, -1),
        group_size=_num(a.get("Group size"), int, -1),
        pg_name=_text(a.get("Process Group Name")) or _num(a.get("Process Group Name"), int, None),
        pg_desc=_text(a.get("Process Group Description")),
        pg_ranks=_text(a.get("Process Group Ranks")) or _dims(a.get("Process Group Ranks")),
        wait_on_stream=_num(a.get("wait_on_stream"), int, -1),
        wait_on_record_corr=_num(a.get("wait_on_cuda_event_record_corr_id"), int, -1),
    )

    def text(k):
        v = d.get(k)
        return v if isinstance(v, str) else ""

    def ident(k):
        v = d.get(k)
        if isinstance(v, str):
            return v
        return _num(v, int, -1)

    return _Event(
        ph=text("ph"),
        cat=text("cat"),
        name=_name(d.get("name")),
        pid=ident("pid"),
        tid=ident("tid"),
        ts=_time(d.get("ts")),
        dur=_time(d.get("dur")),
        args=args,
    )


def _time(v) -> float:
    """A time only from a JSON number: NaN (excluded by the screen) for a string such as "10",
    a boolean, null, a missing value, or a number beyond float64."""
    if type(v) is float:
        return v
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            return _NAN
    return _NAN


def _name(v) -> str:
    if isinstance(v, str):
        return v
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _real(v) -> float:
    # "blocks per SM" may be written as the string "inf" (SM count unknown): not a number.
    if type(v) is float:
        return v
    return _NAN if v is None else _num(v, float, _NAN)


def _prod(v) -> int:
    if not v:
        return -1
    n = math.prod(v)
    return n if -(2**63) <= n < 2**63 else -1


_GET_ARGS, _GET_TS, _GET_DUR, _GET_PID, _GET_TID = map(attrgetter, ("args", "ts", "dur", "pid", "tid"))
_GET_STREAM, _GET_CORRELATION, _GET_EXTERNAL_ID, _GET_DEVICE, _GET_REGISTERS, _GET_SHARED_MEMORY = map(
    attrgetter, ("stream", "correlation", "external_id", "device", "registers", "shared_memory")
)
_GET_GRID, _GET_BLOCK, _GET_COLLECTIVE, _GET_WAIT_RECORD, _GET_WAIT_STREAM = map(
    attrgetter, ("grid", "block", "collective", "wait_on_record_corr", "wait_on_stream"))
_KERNEL = int(Cat.KERNEL)
_MISSING = {"grid_blocks": -1, "block_threads": -1, "blocks_per_sm": _NAN, "occupancy_pct": _NAN,
            "registers": -1, "shared_memory": -1}
_LAUNCH_COLUMNS = tuple(_MISSING)

# The shortest event the loader keeps, '{"ph":"X","cat":"cpu_op","ts":0}' and a comma: an upper
# bound on the number of events that fit in a span of bytes.
_MIN_EVENT_BYTES = 33


class _Columns:
    """The columns, filled chunk by chunk, and the file's string table.

    Each column is allocated once for the most events the array could hold. The part never
    written is never touched, so it costs address space, not memory; at the end each column is
    shrunk in place (realloc), so there is no concatenation and no second copy.
    """

    def __init__(self, max_events: int):
        cap = max(int(max_events), 1)
        self.cols = {k: np.empty(cap, dtype) for k, dtype in COLUMNS.items()}
        self.n = 0
        self.names: dict[str, int] = {}
        # (grid, block) -> its index in event_args; a kernel without dimensions points nowhere.
        self.configs: dict[tuple, int] = {(None, None): -1}
        self.event_args: list[dict] = []

    def _reserve(self, n: int) -> None:
        cap = len(self.cols["ts"])
        if n > cap:  # only if the bound was wrong; grow geometrically
            for arr in self.cols.values():
                arr.resize(max(n, cap * 3 // 2), refcheck=False)

    def add(self, events: list[_Event]) -> None:
        kept = [e for e in events if e.ph == "X" and e.cat in _KEPT_CATS]
        if not kept:
            return
        try:
            self._add(kept)
        except OverflowError:
            # An integer beyond int64 (a pid of 2**70): rebuild the chunk's events the tolerant
            # way, which reads such a value as missing, and write the same rows again.
            self._add([_coerce(msgspec.to_builtins(e)) for e in kept])

    def _add(self, kept: list[_Event]) -> None:
        n = len(kept)
        lo, hi = self.n, self.n + n
        self._reserve(hi)
        cols = self.cols
        args = list(map(_GET_ARGS, kept))
        intern = self.names

        def put(key, values, rows=slice(lo, hi), count=n):
            cols[key][rows] = np.fromiter(values, COLUMNS[key], count=count)

        put("ts", map(_GET_TS, kept))
        put("dur", map(_GET_DUR, kept))
        put("cat", [_KEPT_CATS[e.cat] for e in kept])
        names = [e.name for e in kept]
        for name in dict.fromkeys(names):  # new names in order of appearance
            if name not in intern:
                intern[name] = len(intern)
        put("name", list(map(intern.__getitem__, names)))
        # String pids/tids ("Spans", "") are not device or stream numbers: -2.
        put("pid", [p if type(p) is int else -2 for p in map(_GET_PID, kept)])
        put("tid", [t if type(t) is int else -2 for t in map(_GET_TID, kept)])
        put("stream", map(_GET_STREAM, args))
        put("correlation", map(_GET_CORRELATION, args))
        put("external_id", map(_GET_EXTERNAL_ID, args))
        put("device", map(_GET_DEVICE, args))

        # Launch configuration: only kernels carry it, so only kernels are read for it.
        is_kernel = cols["cat"][lo:hi] == _KERNEL
        rows = lo + np.flatnonzero(is_kernel)
        kargs = list(compress(args, is_kernel.tolist()))
        for key in _LAUNCH_COLUMNS:
            cols[key][lo:hi] = _MISSING[key]
        if kargs:
            k = len(kargs)
            put("grid_blocks", [_prod(a.grid) for a in kargs], rows, k)
            put("block_threads", [_prod(a.block) for a in kargs], rows, k)
            put("blocks_per_sm", [_real(a.blocks_per_sm) for a in kargs], rows, k)
            put("occupancy_pct", [_real(a.occupancy_pct) for a in kargs], rows, k)
            put("registers", map(_GET_REGISTERS, kargs), rows, k)
            put("shared_memory", map(_GET_SHARED_MEMORY, kargs), rows, k)
        self._add_extra(args, kargs, rows, lo, hi)
        self.n = hi

    def _add_extra(self, args: list[_Args], kargs: list[_Args], krows: np.ndarray, lo: int, hi: int) -> None:
        """Fill the ``extra`` column: launch dimensions of kernels (one shared dict per
        configuration), collective parameters and wait links of the few events that have them."""
        col = self.cols["extra"]
        col[lo:hi] = -1
        shared, table = self.configs, self.event_args
        if kargs:
            keys = list(zip(map(_GET_GRID, kargs), map(_GET_BLOCK, kargs)))
            for key in set(keys).difference(shared):
                shared[key] = len(table)
                table.append({"grid": key[0], "block": key[1]})
            col[krows] = np.fromiter(map(shared.__getitem__, keys), np.int32, count=len(keys))
        marked = [i for i, (c, w, s) in enumerate(zip(map(_GET_COLLECTIVE, args), map(_GET_WAIT_RECORD, args),
                                                       map(_GET_WAIT_STREAM, args)))
                  if c is not None or w >= 0 or s >= 0]
        for i in marked:
            a = args[i]
            extra = {"collective": a.collective, "dtype": a.dtype, "in_nelems": a.in_nelems,
                     "out_nelems": a.out_nelems, "group_size": a.group_size, "pg_name": a.pg_name,
                     "pg_desc": a.pg_desc, "pg_ranks": a.pg_ranks, "wait_on_stream": a.wait_on_stream,
                     "wait_on_record_corr": a.wait_on_record_corr}
            extra = {k: v for k, v in extra.items() if v is not None and v != -1}
            k = int(col[lo + i])
            if k >= 0:  # a kernel with collective args: its dimensions too
                extra = {**table[k], **extra}
            col[lo + i] = len(table)
            table.append(extra)

    def table(self, path: str) -> tuple[EventTable, float, list[str]]:
        """The table of the events the screen keeps, with ts made relative to the earliest; that
        origin (abs µs); and the screen's warnings."""
        cols = self.cols
        for arr in cols.values():
            arr.resize(self.n, refcheck=False)
        keep, warnings = screen(cols, path, self.event_args)
        if keep is not None:
            cols = {k: v[keep] for k, v in cols.items()}
        del keep
        ts = cols["ts"]
        origin = 0.0
        if len(ts):
            origin = _make_relative(ts)
        return EventTable(**cols, names=list(self.names)), origin, warnings


def _make_relative(ts: np.ndarray, block: int = 1 << 20) -> float:
    """Make ``ts`` (absolute µs) relative to its minimum, in place; returns that minimum.

    A plain ``ts - min`` would carry each value's parse error (up to ~0.5 ns near 5e12 µs) into
    the result. Below ``_NS_EXACT_LIMIT`` each value is instead split into whole µs and a
    fraction rounded to whole ns, which are exactly the digits written; the differences are
    then computed exactly in integers held as float64 (all below 2**53).
    """
    first = float(ts.min())
    if np.abs(ts).max() >= _NS_EXACT_LIMIT:
        ts -= first
        return first
    whole0 = math.floor(first)
    ns0 = round((first - whole0) * 1000.0)
    for lo in range(0, len(ts), block):  # in blocks, to keep the temporaries small
        part = ts[lo : lo + block]
        whole = np.floor(part)
        frac_ns = np.rint((part - whole) * 1000.0)
        whole -= whole0
        whole *= 1000.0
        whole += frac_ns - ns0
        np.divide(whole, 1000.0, out=part)
    return whole0 + ns0 / 1000.0


# ---------------------------------------------------------------------------- one file


def read_rank_trace(
    path: str,
    *,
    chunk_bytes: int | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> RankTrace:
    """Parse one trace file. ``rank`` is taken from distributedInfo or the file name, else -1.

    ``on_bytes(done, total)`` is called after each chunk with the bytes of the events array
    decoded so far and in all (for progress).
    """
    path = os.fspath(path)
    buf, size, compressed = read_bytes(path)
    where = "of the decompressed JSON" if compressed else "of the file"
    view = memoryview(buf)[:size]
    try:
        found = _find_events(view)
        if found is not None:
            top, start = found
            close, events_view, base = b"", view, 0
            release = _PageReleaser(buf) if hasattr(mmap, "MADV_DONTNEED") else None
        else:
            top = _split_top(path, view, where)  # any JSON error is raised here, not below
            events_view = memoryview(top.pop("traceEvents"))
            start, close, release, base = 0, b"}", None, None
        events_bytes = len(events_view) - start
        columns = _Columns(events_bytes // _MIN_EVENT_BYTES + 1)
        chunks = _EventChunks(path, events_view, start, close, chunk_bytes or CHUNK_BYTES,
                              on_bytes, release, base, where)
        for chunk in chunks:
            columns.add(chunk)
            del chunk
        top.update(chunks.trailing)
        meta = _metadata(top)
        del top, chunks, events_view
    finally:
        try:
            view.release()
            buf.close()
        except BufferError:  # a view is still alive (an error path): the mapping goes with it
            pass
        del view, buf
    table, origin, warnings = columns.table(path)

    dist = meta.pop("distributedInfo", None)
    dist = dist if isinstance(dist, dict) else None
    rank = _as_int(dist.get("rank")) if dist else None
    if rank is None:
        rank = rank_from_filename(path)
    world = _as_int(dist.get("world_size")) if dist else None
    return RankTrace(
        path=path,
        rank=-1 if rank is None else rank,
        events=table,
        origin_ts_us=origin,
        world_size=world if world and world > 0 else None,
        devices=_devices(meta.pop("deviceProperties", None)),
        distributed_info=dist,
        record_shapes=_as_flag(meta.get("record_shapes")),
        with_stack=_as_flag(meta.get("with_stack")),
        profile_memory=_as_flag(meta.get("profile_memory")),
        metadata=meta,
        event_args=columns.event_args,
        warnings=warnings,
    )
