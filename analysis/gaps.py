"""Idle gaps and exposed-comm intervals, with what surrounds them and why (metrics.md).

An idle gap is a maximal interval inside the span with no GPU activity; an exposed-comm
interval a maximal interval of ∪comm \\ ∪compute. Each is attributed through *the event after
it* — for an idle gap the next GPU event; for exposed comm the next compute kernel (the one whose
absence left comm exposed), or the first comm kernel in it when no compute follows:
its step, the phase and CPU op around its launch, and the cause:
``host_late`` (its launch began after the gap began), ``sync`` (a synchronisation overlaps the
gap), else ``dependency``.
"""

from __future__ import annotations

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.events import Cat

SYNC_CALLS = ("cudaStreamWaitEvent", "cudaDeviceSynchronize", "cudaStreamSynchronize",
              "cudaEventSynchronize")


def _sync_intervals(tl):
    """Synchronisations: this device's cuda_sync events and synchronising runtime calls."""
    ev = tl.rank.events
    codes = [ev.names.index(n) for n in SYNC_CALLS if n in ev.names]
    mask = ((ev.cat == Cat.CUDA_SYNC) & (ev.pid == tl.device_id)) | \
           ((ev.cat == Cat.CUDA_RUNTIME) & np.isin(ev.name, codes))
    return ev.ts[mask], ev.ts[mask] + np.maximum(ev.dur[mask], 0.0)


def _overlaps_any(s, e, a_start, a_end) -> np.ndarray:
    """Whether each [s, e) meets some [a_start, a_end); a 0-µs event is a point."""
    long = a_end > a_start
    u = iv.union(a_start[long], a_end[long])
    hit = iv.overlap_each(s, e, u) > 0
    points = np.sort(a_start[~long])
    return hit | (np.searchsorted(points, e, side="left") > np.searchsorted(points, s, side="left"))


def _attribute(tl, after: np.ndarray, gap_start: np.ndarray, gap_end: np.ndarray):
    """step, phase, cpu_op and cause per gap, from the timeline index of the event after it."""
    ev = tl.rank.events
    ok = after >= 0
    idx = np.maximum(after, 0)
    step = np.where(ok, tl.steps.step_of[idx], -1)
    launch = np.where(ok, tl.launch[idx], -1)
    phase = np.where(ok, tl.phase[idx], -1)
    op = np.where(ok, tl.cpu_op[idx], -1)
    launch_ts = np.where(launch >= 0, ev.ts[np.maximum(launch, 0)], np.nan)
    sync_s, sync_e = _sync_intervals(tl)
    synced = _overlaps_any(gap_start, gap_end, sync_s, sync_e)
    cause = np.where(launch_ts > gap_start, "host_late", np.where(synced, "sync", "dependency"))
    return [{"step": int(st) if st >= 0 else None, "phase": tl.row_name(int(p)),
             "cpu_op": tl.row_name(int(o)), "cause": str(c)}
            for st, p, o, c in zip(step, phase, op, cause)]


def _last_ending_by(start, end, idx, t):
    """Among events idx, the one with the latest end ≤ t (-1)."""
    if len(idx) == 0:
        return np.full(len(t), -1)
    order = idx[np.argsort(end[idx], kind="stable")]
    k = np.searchsorted(end[order], t, side="right") - 1
    return np.where(k >= 0, order[np.maximum(k, 0)], -1)


def _first_starting_from(start, idx, t):
    """Among events idx (sorted by start), the first starting at or after t (-1)."""
    k = np.searchsorted(start[idx], t, side="left")
    return np.where(k < len(idx), idx[np.minimum(k, len(idx) - 1)], -1) if len(idx) else np.full(len(t), -1)


def _covering(start, end, idx, t):
    """Among events idx (sorted by start), one that contains t: the one reaching furthest of
    those starting at or before t (-1 when even that one has ended)."""
    if len(idx) == 0:
        return np.full(len(t), -1)
    e = end[idx]
    reach_at = np.maximum.accumulate(np.where(e == np.maximum.accumulate(e), np.arange(len(idx)), 0))
    k = np.searchsorted(start[idx], t, side="right") - 1
    best = idx[reach_at[np.maximum(k, 0)]]
    return np.where((k >= 0) & (end[best] > t), best, -1)


def gap_table(tl, sel: np.ndarray, *, min_gap_us: float = 5.0, top: int | None = None):
    """(gaps at or above min_gap_us, longest first, at most top; {count, total_us} of the rest).

    Times are µs relative to the rank's origin (``RankTrace.origin_ts_us``)."""
    idx = np.flatnonzero(sel)
    start, end = tl.start, tl.end
    below = {"count": 0, "total_us": 0.0}
    if len(idx) == 0:
        return [], below
    comp = idx[tl.is_compute[idx]]
    comm = idx[tl.is_comm[idx]]
    busy = iv.union(start[idx], end[idx])
    # Over the span of metrics.md: a 0-µs event still marks where activity starts or ends.
    idle = iv.complement(busy, start[idx].min(), end[idx].max())
    exposed = iv.subtract(iv.union(start[comm], end[comm]), iv.union(start[comp], end[comp]))

    kinds = np.array(["idle"] * len(idle[0]) + ["exposed_comm"] * len(exposed[0]))
    gs = np.concatenate([idle[0], exposed[0]])
    ge = np.concatenate([idle[1], exposed[1]])
    dur = ge - gs
    keep = dur >= min_gap_us
    below = {"count": int((~keep).sum()), "total_us": float(dur[~keep].sum())}
    order = np.flatnonzero(keep)
    order = order[np.lexsort((gs[order], -dur[order]))]
    if top is not None:
        order = order[:max(top, 0)]
    kinds, gs, ge, dur = kinds[order], gs[order], ge[order], dur[order]
    is_idle = kinds == "idle"

    prev_any = _last_ending_by(start, end, idx, gs)
    next_any = _first_starting_from(start, idx, ge)
    prev_comp = _last_ending_by(start, end, comp, gs)
    next_comp = _first_starting_from(start, comp, ge)
    first_comm = _covering(start, end, comm, gs)
    after = np.where(is_idle, next_any, np.where(next_comp >= 0, next_comp, first_comm))
    attrs = _attribute(tl, after, gs, ge)

    def name(i):
        return tl.name(int(i)) if i >= 0 else None

    out = []
    for j in range(len(order)):
        g = {"kind": str(kinds[j]), "rank": tl.rank.rank, "device_id": tl.device_id,
             "start_us": float(gs[j]), "dur_us": float(dur[j]), **attrs[j]}
        if is_idle[j]:
            g["prev_event"] = name(prev_any[j])
            g["next_event"] = name(next_any[j])
        else:
            over = comm[(start[comm] < ge[j]) & (end[comm] > gs[j])]
            g["comm_kernels"] = sorted({tl.name(int(i)) for i in over})
            g["prev_compute"] = name(prev_comp[j])
            g["next_compute"] = name(next_comp[j])
        out.append(g)
    return out, below
