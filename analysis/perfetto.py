"""The trace as Kineto wrote it, plus speedtrace's analysis as extra tracks, for Perfetto.

``annotate`` copies the original trace byte for byte (its events are not re-encoded) and appends,
per GPU of the rank, one synthetic process holding:

- counter tracks (``"ph": "C"``; Perfetto names a track "<name> <arg>"): "SM usage Σ blocks/SM"
  (of the running compute kernels with a known b, as metrics.md defines it), "GPU busy" (1) or
  idle (0), "comm exposed" (1 on ∪comm \\ ∪compute) and "memory traffic exposed" (1 on
  ∪memory \\ (∪compute ∪ ∪comm));
- slices (``"ph": "X"``) on their own threads: the idle, exposed-comm and exposed-memory gaps of
  at least ``min_gap_us`` with their cause, phase and CPU op; the phases as the GPU ran them
  (annotation instances, first to last GPU event they launched); the steps likewise.
  Perfetto moves slices that overlap on one thread to an overflow track, so overlapping phases
  and steps are spread over several threads by interval packing; gaps of one kind never overlap.
- ``process_name`` / ``thread_name`` / sort-index metadata, so the tracks are labelled and sit
  next to the GPU they describe.

The synthetic events cannot be taken for trace events by speedtrace's decoder (which keeps
only ``"ph": "X"`` events of Kineto's categories; these slices have category ``speedtrace``)
nor by a reader that keys GPU work on pid: they live in processes numbered from
``SYNTH_PID_BASE``, above any Linux pid (pid_max is at most 2**22) and any device id.
"""

from __future__ import annotations

import gzip
import os

import msgspec
import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.decode import read_bytes
from speedtrace.analysis.events import RankTrace
from speedtrace.analysis.gaps import gap_table
from speedtrace.analysis.timeline import device_timeline
from speedtrace.analysis.tracks import exposed_memory, pack, phase_instances, sm_usage, step_spans
from speedtrace.errors import SpeedtraceError

SYNTH_PID_BASE = 0x7F000000
CATEGORY = "speedtrace"
# Kineto sorts GPU d's process at 5000000 + d; ours shares the index and sorts after it by pid.
GPU_SORT_BASE = 5_000_000
GAP_TIDS = {"idle": 1, "exposed_comm": 2, "exposed_memory": 3}
GAP_TITLES = {"idle": "idle gaps", "exposed_comm": "exposed comm", "exposed_memory": "exposed memory"}
PHASE_TID0, STEP_TID0 = 10, 40
MAX_LEVELS = 24  # packing levels for phases and steps (beyond: Perfetto's overflow track)

_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENC = msgspec.json.Encoder()


def _abs(rank: RankTrace, t) -> list[float]:
    """Absolute µs, rounded to the ns Kineto writes."""
    return np.round(np.asarray(t, np.float64) + rank.origin_ts_us, 3).tolist()


def _meta(pid: int, tid: int, name: str, args: dict) -> dict:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": args}


def _counter(rank, pid: int, name: str, key: str, x, values) -> list[dict]:
    return [{"ph": "C", "cat": CATEGORY, "name": name, "pid": pid, "tid": 0, "ts": t, "args": {key: v}}
            for t, v in zip(_abs(rank, x), values)]


def _flag_counter(rank, pid: int, name: str, key: str, u: iv.Union, lo: float) -> list[dict]:
    """A 0/1 counter: 0 from ``lo`` (unless the union starts there), 1 on each interval of the union."""
    x = np.column_stack([u[0], u[1]]).ravel()
    v = [1, 0] * len(u[0])
    if not len(x) or x[0] > lo:
        x, v = np.concatenate([[lo], x]), [0] + v
    return _counter(rank, pid, name, key, x, v)


def _slice(rank, pid: int, tid: int, name: str, start: float, dur: float, args: dict) -> dict:
    return {"ph": "X", "cat": CATEGORY, "name": name, "pid": pid, "tid": tid,
            "ts": _abs(rank, [start])[0], "dur": round(float(dur), 3), "args": args}


def _clean(d: dict) -> dict:
    """Slice args: the gap record without keys Perfetto shows elsewhere, None as absent."""
    return {k: v for k, v in d.items() if v is not None and k not in ("kind", "start_us", "dur_us", "rank",
                                                                      "device_id")}


def device_events(rank: RankTrace, device_id: int, run: dict | None = None, *,
                  min_gap_us: float = 5.0) -> list[dict]:
    """The synthetic events for one GPU of a rank (see the module docstring)."""
    tl = device_timeline(rank, device_id, run)
    pid = SYNTH_PID_BASE + device_id
    sel = np.ones(len(tl.rows), dtype=bool)
    out = [_meta(pid, 0, "process_name", {"name": f"GPU {device_id} · speedtrace analysis"}),
           _meta(pid, 0, "process_labels", {"labels": f"rank {rank.rank}"}),
           _meta(pid, 0, "process_sort_index", {"sort_index": GPU_SORT_BASE + device_id})]
    if len(tl.rows) == 0:
        return out
    lo = float(tl.start.min())

    x, f = sm_usage(tl, sel)
    if len(f):
        keep = np.ones(len(f), dtype=bool)
        keep[1:] = f[1:] != f[:-1]
        xs = np.append(x[:-1][keep], x[-1])
        vs = np.append(np.round(f[keep], 4), 0.0).tolist()
        out += _counter(rank, pid, "SM usage", "Σ blocks/SM", xs, vs)
    busy = iv.union(tl.start, tl.end)
    comp = iv.union(tl.start[tl.is_compute], tl.end[tl.is_compute])
    comm = iv.union(tl.start[tl.is_comm], tl.end[tl.is_comm])
    mem = iv.union(tl.start[tl.is_memory], tl.end[tl.is_memory])
    out += _flag_counter(rank, pid, "GPU", "busy", busy, lo)
    out += _flag_counter(rank, pid, "comm", "exposed", iv.subtract(comm, comp), lo)
    out += _flag_counter(rank, pid, "memory traffic", "exposed", iv.subtract(mem, iv.merge(comp, comm)), lo)

    gaps, _ = gap_table(tl, sel, min_gap_us=min_gap_us)
    gaps += exposed_memory(tl, sel, min_gap_us)
    for kind, tid in GAP_TIDS.items():
        out.append(_meta(pid, tid, "thread_name", {"name": f"{GAP_TITLES[kind]} ≥ {min_gap_us:g} µs"}))
        out.append(_meta(pid, tid, "thread_sort_index", {"sort_index": tid}))
    for g in sorted(gaps, key=lambda g: g["start_us"]):
        kind = g["kind"].replace("_", " ")
        name = f"{kind}: {g['cause']}" if g.get("cause") else kind
        out.append(_slice(rank, pid, GAP_TIDS[g["kind"]], name, g["start_us"], g["dur_us"], _clean(g)))

    out += _packed(rank, pid, PHASE_TID0, "phases (GPU)",
                   [(name, s, e, {"gpu_events": n}) for name, s, e, n in phase_instances(tl, sel)])
    steps = [(f"step {n}", s, e, {"gpu_events": k, "step_source": tl.steps.source})
             for n, s, e, k in step_spans(tl, sel)]
    out += _packed(rank, pid, STEP_TID0, "steps (GPU)", steps)
    return out


def _packed(rank, pid: int, tid0: int, title: str, items: list[tuple]) -> list[dict]:
    """Slices spread over threads tid0, tid0+1, ... so that none overlaps another on a thread."""
    if not items:
        return []
    level = pack(np.array([i[1] for i in items]), np.array([i[2] for i in items]), MAX_LEVELS)
    out = []
    for k in range(int(level.max()) + 1):
        label = title if k == 0 else f"{title} ({k + 1})"
        out.append(_meta(pid, tid0 + k, "thread_name", {"name": label}))
        out.append(_meta(pid, tid0 + k, "thread_sort_index", {"sort_index": tid0 + k}))
    for (name, s, e, args), k in zip(items, level):
        out.append(_slice(rank, pid, tid0 + int(k), name, s, e - s, args))
    return out


def annotation_events(rank: RankTrace, run: dict | None = None, *, min_gap_us: float = 5.0) -> list[dict]:
    """The synthetic events for every GPU of a rank."""
    out = []
    for device_id in rank.gpu_devices():
        out += device_events(rank, device_id, run, min_gap_us=min_gap_us)
    return out


def annotated_json(src_path: str, extra: list[dict]) -> bytes:
    """The source trace's JSON with ``extra`` appended to its ``traceEvents``; every other
    byte of the events and every top-level key kept as written (in order)."""
    buf, size, _ = read_bytes(src_path)
    try:
        view = memoryview(buf)[:size]
        try:
            top = _TOP.decode(view)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise SpeedtraceError(f"{src_path}: not a trace object ({e})") from None
        if "traceEvents" not in top:
            raise SpeedtraceError(f"{src_path}: not a trace (no traceEvents list)")
        parts = []
        for key, raw in top.items():
            value = bytes(raw)
            if key == "traceEvents":
                body = value.strip()
                if not (body.startswith(b"[") and body.endswith(b"]")):
                    raise SpeedtraceError(f"{src_path}: traceEvents is not a list")
                inner = body[1:-1].strip()
                added = _ENC.encode(extra)[1:-1]
                body = b"[" + inner + (b"," if inner and added else b"") + added + b"]"
                value = body
            parts.append(_ENC.encode(key) + b":" + value)
        del top, view
        return b"{" + b",".join(parts) + b"}"
    finally:
        try:
            buf.close()
        except BufferError:
            pass


def write_annotated(src_path: str, rank: RankTrace, out_path: str, run: dict | None = None, *,
                    min_gap_us: float = 5.0) -> int:
    """Write the annotated trace (gzip when ``out_path`` ends in .gz); returns the number of
    events added. SpeedtraceError when the output cannot be written."""
    extra = annotation_events(rank, run, min_gap_us=min_gap_us)
    data = annotated_json(src_path, extra)
    tmp = f"{out_path}.{os.getpid()}.tmp"
    try:
        if out_path.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
                f.write(data)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
        os.replace(tmp, out_path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SpeedtraceError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return len(extra)
