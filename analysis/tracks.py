"""What the timeline figure and the Perfetto export draw for one device, beside its kernels.

Plain numpy over a ``DeviceTimeline`` and a selection of its events (no plotting), so the two
views show the same things: streams and what they carry, each step's first GPU start, the
phases as the GPU ran them, SM usage (Σ blocks/SM), the times communication ran or queued
while compute held every SM, exposed memory traffic, and interval packing for overlapping
slices.
"""

from __future__ import annotations

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.gaps import _attribute, _covering
from speedtrace.analysis.timeline import DeviceTimeline


def stream_of(tl: DeviceTimeline) -> np.ndarray:
    """Stream of each event of the timeline (``args.stream``, else the tid Kineto uses for it)."""
    ev = tl.rank.events
    return np.where(ev.stream[tl.rows] >= 0, ev.stream[tl.rows], ev.tid[tl.rows])


def stream_kind(tl: DeviceTimeline, mask: np.ndarray) -> str:
    """compute / comm / memcpy, or a '+'-joined mix, for the events of one stream."""
    kinds = [k for k, m in (("compute", tl.is_compute), ("comm", tl.is_comm), ("memcpy", tl.is_memory))
             if (m & mask).any()]
    return "+".join(kinds) or "empty"


def step_starts(tl: DeviceTimeline, sel: np.ndarray) -> dict[int, float]:
    """First GPU start of each step among the selected events (µs from the rank origin)."""
    out = {}
    for n in tl.steps.steps:
        m = sel & (tl.steps.step_of == n)
        if m.any():
            out[int(n)] = float(tl.start[m].min())
    return out


def step_spans(tl: DeviceTimeline, sel: np.ndarray) -> list[tuple[int, float, float, int]]:
    """(step, first GPU start, last GPU end, events) of each step among the selected events."""
    out = []
    for n in tl.steps.steps:
        m = sel & (tl.steps.step_of == n)
        if m.any():
            out.append((int(n), float(tl.start[m].min()), float(tl.end[m].max()), int(m.sum())))
    return out


def phase_instances(tl: DeviceTimeline, sel: np.ndarray) -> list[tuple[str, float, float, int]]:
    """(name, first start, last end, events) per annotation instance that launched selected GPU
    work, by start: the phase as the GPU ran it, not as the host issued it."""
    idx = np.flatnonzero(sel & (tl.phase >= 0))
    if len(idx) == 0:
        return []
    ph = tl.phase[idx]
    order = np.argsort(ph, kind="stable")
    ph, idx = ph[order], idx[order]
    cut = np.flatnonzero(np.diff(ph)) + 1
    out = []
    for part in np.split(np.arange(len(idx)), cut):
        rows = idx[part]
        out.append((tl.row_name(int(ph[part[0]])), float(tl.start[rows].min()), float(tl.end[rows].max()),
                    len(rows)))
    out.sort(key=lambda r: r[1])
    return out


def sm_usage(tl: DeviceTimeline, sel: np.ndarray):
    """Σ blocks/SM of the selected running compute kernels with known b, as (breakpoints, values)."""
    m = sel & tl.is_compute & ~np.isnan(tl.b)
    return iv.step_function(tl.start[m], tl.end[m], tl.b[m])


def contention(tl: DeviceTimeline, sel: np.ndarray) -> tuple[iv.Union, iv.Union]:
    """(comm running, comm queued and not running) while compute claims every SM, as metrics.md's
    ``sm_contention_us`` and ``comm_queue_full_sm_us`` measure them: running against the
    selection's full-SM set, queued (launch end to start) against the whole device's."""
    comm = sel & tl.is_comm
    comp = sel & tl.is_compute
    x, f = iv.step_function(tl.start[comp], tl.end[comp], tl.sm_weight[comp])
    running = iv.intersect(iv.union(tl.start[comm], tl.end[comm]), iv.where(x, f >= tl.sm_threshold))
    ev = tl.rank.events
    queued = comm & (tl.launch >= 0)
    launch = tl.launch[queued]
    q_from = ev.ts[launch] + np.maximum(ev.dur[launch], 0.0)
    waiting = iv.intersect(iv.union(q_from, tl.start[queued]), tl.full_sm)
    return running, iv.subtract(waiting, running)


def exposed_memory(tl: DeviceTimeline, sel: np.ndarray, min_gap_us: float) -> list[dict]:
    """Maximal intervals of ∪memory \\ (∪compute ∪ ∪comm) of at least ``min_gap_us``, attributed
    as gaps.py attributes a gap, through the memory event that covers their start (its step,
    phase, CPU op and cause)."""
    idx = np.flatnonzero(sel)
    mem, kern = idx[tl.is_memory[idx]], idx[tl.is_kernel[idx]]
    u = iv.subtract(iv.union(tl.start[mem], tl.end[mem]), iv.union(tl.start[kern], tl.end[kern]))
    keep = (u[1] - u[0]) >= min_gap_us
    gs, ge = u[0][keep], u[1][keep]
    if len(gs) == 0:
        return []
    owner = _covering(tl.start, tl.end, mem, gs)
    attrs = _attribute(tl, owner, gs, ge)
    return [{"kind": "exposed_memory", "rank": tl.rank.rank, "device_id": tl.device_id,
             "start_us": float(s), "dur_us": float(e - s), "event": tl.name(int(o)) if o >= 0 else None, **a}
            for s, e, o, a in zip(gs, ge, owner, attrs)]


def pack(starts: np.ndarray, ends: np.ndarray, levels: int) -> np.ndarray:
    """A level per interval so that no two on one level overlap (greedy, by start); past
    ``levels`` they share the last one."""
    level = np.zeros(len(starts), dtype=np.int64)
    free_at = [-np.inf] * levels
    for i in np.argsort(starts, kind="stable"):
        for k in range(levels):
            if free_at[k] <= starts[i]:
                break
        else:
            k = levels - 1
        level[i] = k
        free_at[k] = max(free_at[k], ends[i])
    return level
