"""When each collective could have started, and the comm queue split by what it waited for.

A comm kernel is *ready* (metrics.md "Comm queueing") when

- its launch call has returned,
- the GPU work it waits on through CUDA events has finished: the ``cudaStreamWaitEvent`` before
  its launch makes its stream wait for an event, recorded by a ``cudaEventRecord`` on another
  stream, which completes when the work queued on that stream before the record has run, and
- the work queued ahead of it on its own stream has finished (a stream runs in order).

Until then it waits for its inputs; from then until it starts it waits for the GPU to take it
(SMs, or a slot among the concurrent kernels). The event links come from Kineto's ``cuda_sync``
"Stream Wait Event" events where the trace has them (``wait_on_stream`` and
``wait_on_cuda_event_record_corr_id`` name the producer exactly); otherwise from the runtime calls
of the CPU op that launched the collective: the first ``cudaStreamWaitEvent`` with the launch's
``External id`` on the launch's thread, and the ``cudaEventRecord`` before it in that op, whose
stream is the launching thread's current stream (that of its latest launch onto a stream
without comm kernels: the event ProcessGroupNCCL records is on the caller's current stream).
Where neither exists, ready is the launch's end (or the end of the work ahead on its stream) and
``Readiness.warnings`` says the split was not possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.events import LAUNCH_CATS, Cat
from speedtrace.analysis.links import thread_keys
from speedtrace.analysis.memo import keep_last

WAIT_CALL = "cudaStreamWaitEvent"
RECORD_CALLS = ("cudaEventRecord", "cudaEventRecordWithFlags")
QUEUE_KEYS = ("comm_queue_us", "comm_queue_full_sm_us", "comm_wait_inputs_us")


@dataclass
class Readiness:
    """Per comm kernel of a ``DeviceTimeline`` (ascending timeline index ``idx``)."""

    idx: np.ndarray           # timeline indices of the comm kernels
    stream: np.ndarray        # their streams
    launch_end: np.ndarray    # end of the launch call; NaN when the launch is not in the trace
    queue_from: np.ndarray    # min(launch end, start): where its queue begins (NaN: no launch)
    ready: np.ndarray         # in [queue_from, start]; NaN when no launch
    linked: np.ndarray        # bool: its inputs were found through event links
    warnings: list[str] = field(default_factory=list)


def streams_of(tl) -> np.ndarray:
    """The stream of each timeline event (``args.stream``, else the event's tid)."""
    ev = tl.rank.events
    s = ev.stream[tl.rows]
    return np.where(s >= 0, s, ev.tid[tl.rows])


def _work_ahead(tl, stream: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For the events idx: the latest end among the events that started before them on their
    stream (-inf when none)."""
    out = np.full(len(idx), -np.inf)
    for s in np.unique(stream[idx]):
        on = np.flatnonzero(stream == s)  # in start order
        before = np.concatenate([[-np.inf], np.maximum.accumulate(tl.end[on])[:-1]])
        pos = np.searchsorted(on, idx[stream[idx] == s])
        out[stream[idx] == s] = before[pos]
    return out


class _Producers:
    """Latest end of the work queued on a stream before a correlation id, and a thread's current
    stream at a time."""

    def __init__(self, tl, stream: np.ndarray, comm_streams: np.ndarray):
        ev = tl.rank.events
        corr = ev.correlation[tl.rows]
        self.by_stream: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s in np.unique(stream):
            on = np.flatnonzero((stream == s) & (corr >= 0))
            order = on[np.argsort(corr[on], kind="stable")]
            self.by_stream[int(s)] = (corr[order], np.maximum.accumulate(tl.end[order]))
        # Launches onto streams without comm kernels, per launching thread, by time.
        has = (tl.launch >= 0) & ~np.isin(stream, comm_streams)
        launch = tl.launch[has]
        keys = thread_keys(ev.pid[launch], ev.tid[launch])
        self.by_thread: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k in np.unique(keys):
            m = keys == k
            t, s = ev.ts[launch[m]], stream[has][m]
            order = np.argsort(t, kind="stable")
            self.by_thread[int(k)] = (t[order], s[order])

    def end_before(self, s: int, corr: int) -> float:
        """When the work queued on stream s before the call with correlation ``corr`` ended."""
        hit = self.by_stream.get(int(s))
        if hit is None:
            return -np.inf
        k = int(np.searchsorted(hit[0], corr, side="left")) - 1
        return float(hit[1][k]) if k >= 0 else -np.inf

    def current_stream(self, key: int, t: float) -> int | None:
        """The stream of the thread's latest launch (onto a non-comm stream) before t."""
        hit = self.by_thread.get(int(key))
        if hit is None:
            return None
        k = int(np.searchsorted(hit[0], t, side="left")) - 1
        return int(hit[1][k]) if k >= 0 else None


def _calls(ev, names) -> np.ndarray:
    codes = [ev.names.index(n) for n in names if n in ev.names]
    return np.flatnonzero(np.isin(ev.cat, LAUNCH_CATS) & np.isin(ev.name, codes))


def _by_op(ev, rows: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Runtime-call rows grouped by (thread, External id), each group sorted by time."""
    rows = rows[ev.external_id[rows] >= 0]
    keys = thread_keys(ev.pid[rows], ev.tid[rows])
    out: dict[tuple[int, int], list[int]] = {}
    for k, x, r in zip(keys.tolist(), ev.external_id[rows].tolist(), rows.tolist()):
        out.setdefault((k, x), []).append(r)
    return {k: np.array(sorted(v, key=lambda r: ev.ts[r])) for k, v in out.items()}


def _sync_waits(tl, rank) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Kineto's wait events of this device per consumer stream: (wait call correlation sorted,
    producer stream or -1, record call correlation)."""
    ev = rank.events
    rows = np.flatnonzero((ev.cat == Cat.CUDA_SYNC) & (ev.pid == tl.device_id) & (ev.extra >= 0))
    out: dict[int, list] = {}
    for r in rows.tolist():
        a = rank.args_of(r)
        rec = a.get("wait_on_record_corr", -1)
        if rec is None or rec < 0 or ev.correlation[r] < 0:
            continue
        s = int(ev.stream[r]) if ev.stream[r] >= 0 else int(ev.tid[r])
        out.setdefault(s, []).append((int(ev.correlation[r]), int(a.get("wait_on_stream", -1)), int(rec)))
    result = {}
    for s, items in out.items():
        items.sort()
        arr = np.array(items, dtype=np.int64)
        result[s] = (arr[:, 0], arr[:, 1], arr[:, 2])
    return result


@keep_last()
def comm_readiness(tl) -> Readiness:
    """When each comm kernel of the timeline was ready (see the module docstring); kept for
    the last timeline asked about."""
    rank, ev = tl.rank, tl.rank.events
    stream = streams_of(tl)
    idx = np.flatnonzero(tl.is_comm)
    comm_streams = np.unique(stream[idx])
    launch = tl.launch[idx]
    has = launch >= 0
    lrow = np.maximum(launch, 0)
    launch_end = np.where(has, ev.ts[lrow] + ev.dur[lrow], np.nan)
    start = tl.start[idx]
    ahead = _work_ahead(tl, stream, idx)

    producers = _Producers(tl, stream, comm_streams)
    sync = _sync_waits(tl, rank)
    waits = _by_op(ev, _calls(ev, [WAIT_CALL])) if len(idx) else {}
    records = _by_op(ev, _calls(ev, RECORD_CALLS)) if len(idx) else {}
    record_row = {int(ev.correlation[r]): int(r) for r in _calls(ev, RECORD_CALLS) if ev.correlation[r] >= 0}
    corr = ev.correlation[tl.rows]
    # The previous GPU op on a kernel's stream, by correlation: sync waits issued after it and
    # before the kernel's launch are the kernel's.
    prev_corr = np.full(len(idx), -1, dtype=np.int64)
    for s in comm_streams:
        on = np.flatnonzero((stream == s) & (corr >= 0))
        c = np.sort(corr[on])
        if len(c) == 0:  # no correlations on this stream: nothing links to its kernels
            continue
        mine = np.flatnonzero(stream[idx] == s)
        k = np.searchsorted(c, corr[idx[mine]], side="left") - 1
        prev_corr[mine] = np.where(k >= 0, c[np.maximum(k, 0)], -1)

    def producer_end(rec_corr: int, s: int) -> float | None:
        if s < 0:  # producer stream not written: the recording thread's current stream
            r = record_row.get(rec_corr)
            if r is None:
                return None
            found = producers.current_stream(int(thread_keys(ev.pid[r], ev.tid[r])), float(ev.ts[r]))
            if found is None:
                return None
            s = found
        return producers.end_before(s, rec_corr)

    inputs = np.full(len(idx), -np.inf)
    linked = np.zeros(len(idx), dtype=bool)
    for j in np.flatnonzero(has).tolist():
        ends = []
        s = int(stream[idx[j]])
        if s in sync:
            wc, ws, wr = sync[s]
            lo = np.searchsorted(wc, prev_corr[j], side="right")
            hi = np.searchsorted(wc, corr[idx[j]], side="left")
            ends = [producer_end(int(r), int(p)) for p, r in zip(ws[lo:hi], wr[lo:hi])]
        if not ends:
            L = int(launch[j])
            key = (int(thread_keys(ev.pid[L], ev.tid[L])), int(ev.external_id[L]))
            w = waits.get(key)
            w = w[ev.ts[w] < ev.ts[L]] if w is not None else w
            if w is not None and len(w):
                first = int(w[0])  # the caller's stream sync; later pairs are the library's own
                rec = records.get(key)
                rec = rec[ev.ts[rec] < ev.ts[first]] if rec is not None else rec
                if rec is not None and len(rec):
                    r = int(rec[-1])
                    ends = [producer_end(int(ev.correlation[r]), -1)]
        ends = [e for e in ends if e is not None]
        if ends:
            linked[j] = True
            inputs[j] = max(ends)

    queue_from = np.minimum(launch_end, start)
    ready = np.fmax(np.fmax(launch_end, inputs), ahead)
    ready = np.where(has, np.clip(ready, queue_from, start), np.nan)

    warnings = []
    unlinked = int((has & ~linked).sum())
    if unlinked:
        who = f"{rank.path}: rank {rank.rank} device {tl.device_id}"
        part = "its" if unlinked == int(has.sum()) else f"{unlinked} of its {int(has.sum())}"
        warnings.append(
            f"{who}: {part} collectives have no cudaStreamWaitEvent/cudaEventRecord link to the work "
            "they wait on, so their queue could not be split into waiting for inputs and waiting for "
            "SMs (ready = launch end, or the end of the work ahead on their stream)")
    return Readiness(idx, stream[idx], launch_end, queue_from, ready, linked, warnings)


def comm_queue_totals(tl, sel: np.ndarray) -> dict:
    """``comm_queue_us``, ``comm_queue_full_sm_us`` and ``comm_wait_inputs_us`` over the comm
    kernels selected by the boolean mask ``sel`` (metrics.md): per comm stream the union of
    [ready, start) (of [launch end, ready) for the inputs), summed over streams; the full-SM part
    uses the whole device's ``full_sm`` set."""
    r = comm_readiness(tl)
    out = dict.fromkeys(QUEUE_KEYS, 0.0)
    m = np.asarray(sel, bool)[r.idx] & ~np.isnan(r.ready)
    start = tl.start[r.idx]
    for s in np.unique(r.stream[m]):
        k = m & (r.stream == s)
        queue = iv.union(r.ready[k], start[k])
        out["comm_queue_us"] += iv.length(queue)
        out["comm_queue_full_sm_us"] += iv.length(iv.intersect(queue, tl.full_sm))
        out["comm_wait_inputs_us"] += iv.length(iv.union(r.queue_from[k], r.ready[k]))
    return out
