"""The numbers of metrics.md per (rank, device): totals, steps, phases, gaps and kernels.

``device_report`` returns one rank entry of the report JSON; the functions ``totals``,
``steps``, ``phases``, ``gaps`` and ``kernels`` return the same numbers over a whole
``TraceSet`` as ``Records`` (one dict per row), for notebooks and ``diff``.

Choices where metrics.md leaves room:
- The full-SM set used by ``comm_queue_full_sm_us`` is the whole device's (a queued NCCL kernel
  can wait behind compute of the previous step); every other total uses only the selected
  events (a step's own activity).
- With ``step_range``, whole-trace totals, phases, gaps and kernels cover the GPU activity of
  the selected steps only; the span then runs from their first start to their last end.
- ``select_backward_cpu_ops`` counts the rank's ``aten::select_backward`` ops (all devices of a
  rank share them); per step it counts those starting inside the step's CPU annotation and is
  null for other step sources.
"""

from __future__ import annotations

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis import select_backward as sb
from speedtrace.analysis.events import Cat, RankTrace, Records, TraceSet
from speedtrace.analysis.gaps import gap_table
from speedtrace.analysis.kernels import kernel_table
from speedtrace.analysis.links import PROFILER_STEP
from speedtrace.analysis.timeline import DeviceTimeline, device_timeline

TOTAL_KEYS = (
    "span_us", "busy_us", "idle_us", "compute_us", "comm_us", "memory_us", "overlap_us",
    "exposed_comm_us", "exposed_memory_us", "comp_comm_overlap_pct", "kernel_count",
    "comm_kernel_count", "est_sm_efficiency_pct", "achieved_occupancy_pct", "sm_contention_us",
    "comm_queue_us", "comm_queue_full_sm_us", "select_backward_kernels", "select_backward_us",
    "select_backward_fused_kernels", "select_backward_cpu_ops",
)


def totals_of(tl: DeviceTimeline, sel: np.ndarray, select_backward_cpu_ops: int | None) -> dict:
    """The totals table of metrics.md over the events ``sel`` (a boolean mask) of a timeline."""
    start, end = tl.start[sel], tl.end[sel]
    comp, comm, mem = tl.is_compute[sel], tl.is_comm[sel], tl.is_memory[sel]
    kernel = tl.is_kernel[sel]
    out = dict.fromkeys(TOTAL_KEYS)
    out["kernel_count"] = int(kernel.sum())
    out["comm_kernel_count"] = int(comm.sum())
    kind = tl.select_backward[sel]
    dedicated = kind == sb.DEDICATED
    out["select_backward_kernels"] = int(dedicated.sum())
    out["select_backward_us"] = float((end - start)[dedicated].sum())
    out["select_backward_fused_kernels"] = int((kind == sb.FUSED).sum())
    out["select_backward_cpu_ops"] = select_backward_cpu_ops
    if len(start) == 0:
        for key in ("span_us", "busy_us", "idle_us", "compute_us", "comm_us", "memory_us",
                    "overlap_us", "exposed_comm_us", "exposed_memory_us", "sm_contention_us",
                    "comm_queue_us", "comm_queue_full_sm_us"):
            out[key] = 0.0
        return out

    span = float(end.max() - start.min())
    all_u = iv.union(start, end)
    comp_u = iv.union(start[comp], end[comp])
    comm_u = iv.union(start[comm], end[comm])
    mem_u = iv.union(start[mem], end[mem])
    busy = iv.length(all_u)
    comm_us = iv.length(comm_u)
    overlap = iv.length(iv.intersect(comm_u, comp_u))
    out.update(
        span_us=span,
        busy_us=busy,
        idle_us=span - busy,
        compute_us=iv.length(comp_u),
        comm_us=comm_us,
        memory_us=iv.length(mem_u),
        overlap_us=overlap,
        exposed_comm_us=comm_us - overlap,
        exposed_memory_us=iv.length(iv.subtract(mem_u, iv.merge(comp_u, comm_u))),
        comp_comm_overlap_pct=100.0 * overlap / comm_us if comm_us > 0 else None,
    )

    b = tl.b[sel]
    known = kernel & ~np.isnan(b)
    x, f = iv.step_function(start[known], end[known], b[known])
    # Null rather than 0 when no kernel has a known b: unknown is not idle.
    out["est_sm_efficiency_pct"] = (100.0 * iv.integral(x, np.clip(f, 0.0, 1.0)) / span
                                    if span > 0 and known.any() else None)

    occ = tl.rank.events.occupancy_pct[tl.rows[sel]]
    has_occ = comp & ~np.isnan(occ)
    weight = (end - start)[has_occ]
    out["achieved_occupancy_pct"] = (float(np.sum(occ[has_occ] * weight) / weight.sum())
                                     if weight.sum() > 0 else None)

    x, f = iv.step_function(start[comp], end[comp], tl.sm_weight[sel][comp])
    out["sm_contention_us"] = iv.length(iv.intersect(comm_u, iv.where(x, f >= tl.sm_threshold)))

    # Queue of a comm kernel: from the end of its launch call to its start.
    ev = tl.rank.events
    launch = tl.launch[sel]
    queued = comm & (launch >= 0)
    q_from = ev.ts[launch[queued]] + ev.dur[launch[queued]]
    q_to = start[queued]
    out["comm_queue_us"] = float(np.maximum(q_to - q_from, 0.0).sum())
    out["comm_queue_full_sm_us"] = float(iv.overlap_each(q_from, q_to, tl.full_sm).sum())
    return out


def _eager_select_backward_ops(rank: RankTrace) -> np.ndarray:
    """Start times and pids of the rank's CPU ops named exactly aten::select_backward."""
    ev = rank.events
    if sb.EAGER_OP not in ev.names:
        return np.empty(0, np.int64)
    return np.flatnonzero((ev.cat == Cat.CPU_OP) & (ev.name == ev.names.index(sb.EAGER_OP)))


def _cpu_step_of(rank: RankTrace, rows: np.ndarray) -> np.ndarray:
    """Step number of the ProfilerStep#N annotation (same pid) each CPU event starts in (-1)."""
    ev = rank.events
    out = np.full(len(rows), -1, dtype=np.int64)
    ann = [(r, int(m.group(1))) for r in np.flatnonzero(ev.cat == Cat.USER_ANNOTATION)
           if (m := PROFILER_STEP.match(ev.names[ev.name[r]]))]
    for r, n in ann:
        inside = (ev.pid[rows] == ev.pid[r]) & (ev.ts[rows] >= ev.ts[r]) & (ev.ts[rows] < ev.ts[r] + ev.dur[r])
        out[inside] = n
    return out


def _phase_table(tl: DeviceTimeline, sel: np.ndarray) -> list[dict]:
    """GPU time per phase name: the sum of durations of the events whose launch lies in a range
    of that name (not a union, so concurrent kernels of one phase both count), and the number of
    kernels among them (memcpy and memset add time but are not counted)."""
    ev = tl.rank.events
    phase = tl.phase[sel]
    code = np.where(phase >= 0, ev.name[np.maximum(phase, 0)], -1)
    dur = (tl.end - tl.start)[sel]
    kernel = tl.is_kernel[sel]
    out = []
    for c in np.unique(code):
        m = code == c
        out.append({"phase": ev.names[c] if c >= 0 else None, "gpu_us": float(dur[m].sum()),
                    "kernel_count": int(kernel[m].sum())})
    out.sort(key=lambda r: -r["gpu_us"])
    return out


def device_report(rank_trace: RankTrace, device_id: int, run: dict | None = None, *,
                  step_range: tuple[int, int] | None = None, min_gap_us: float = 5.0,
                  top: int | None = None) -> dict:
    """The rank entry of the report JSON (metrics.md "Report JSON") for one device of a rank.

    Times in it are relative to the rank's first GPU start, carried as ``origin_ts_us``.
    ``step_range`` (first, last), inclusive, keeps those steps: the whole-trace totals, phases,
    gaps and kernels then cover their GPU activity only (an empty selection gives empty lists).
    ``top`` caps the gap and kernel lists (longest, largest first); ``phase`` is None for GPU
    work launched under no annotation other than ProfilerStep#N.
    """
    tl = device_timeline(rank_trace, device_id, run)
    ev = rank_trace.events
    gpu_any = np.isin(ev.cat, (Cat.KERNEL, Cat.GPU_MEMCPY, Cat.GPU_MEMSET))
    first_gpu = float(ev.ts[gpu_any].min()) if gpu_any.any() else 0.0
    step_of = tl.steps.step_of
    numbers = tl.steps.steps
    if step_range is not None:
        a, b = step_range
        numbers = [n for n in numbers if a <= n <= b]
        sel = np.isin(step_of, numbers)
    else:
        sel = np.ones(len(tl.rows), dtype=bool)

    sb_ops = _eager_select_backward_ops(rank_trace)
    cpu_steps = tl.steps.source == "cpu_annotation"
    op_step = _cpu_step_of(rank_trace, sb_ops) if cpu_steps else None
    if step_range is None:
        whole_ops = len(sb_ops)
    else:
        whole_ops = int(np.isin(op_step, numbers).sum()) if cpu_steps else None

    whole = totals_of(tl, sel, whole_ops)
    whole["unassigned_gpu_us"] = (None if tl.steps.source == "none" else
                                  iv.length(iv.union(tl.start[sel & (step_of < 0)], tl.end[sel & (step_of < 0)])))
    step_entries = []
    for n in numbers:
        m = step_of == n
        ops = int((op_step == n).sum()) if cpu_steps else None
        entry = {"step": n, "step_wall_us": tl.steps.wall_us.get(n),
                 "start_us": float(tl.start[m].min() - first_gpu) if m.any() else None,
                 "totals": totals_of(tl, m, ops)}
        step_entries.append(entry)

    gap_list, below = gap_table(tl, sel, min_gap_us=min_gap_us, top=top)
    for g in gap_list:
        g["start_us"] -= first_gpu
    info = rank_trace.devices.get(device_id)
    return {
        "rank": rank_trace.rank,
        "device_id": device_id,
        "device": info.name if info is not None else None,
        "num_sms": tl.num_sms,
        "origin_ts_us": rank_trace.origin_ts_us + first_gpu,
        "step_source": tl.steps.source,
        "totals": whole,
        "steps": step_entries,
        "phases": _phase_table(tl, sel),
        "gaps": gap_list,
        "gaps_below_threshold": below,
        "kernels": kernel_table(tl, sel, top=top),
        "warnings": list(tl.steps.warnings),
    }


# ------------------------------------------------------------------------- public API


def _entries(trace_set: TraceSet, rank: int | None, **kw):
    for rt in trace_set.ranks:
        if rank is not None and rt.rank != rank:
            continue
        for device_id in rt.gpu_devices():
            yield device_report(rt, device_id, trace_set.run, **kw)


def totals(trace_set: TraceSet, *, rank: int | None = None) -> Records:
    """One record per (rank, device): rank, device_id, step_source and every totals key."""
    return Records({"rank": e["rank"], "device_id": e["device_id"], "step_source": e["step_source"],
                    **e["totals"]} for e in _entries(trace_set, rank, top=0))


def steps(trace_set: TraceSet, *, rank: int | None = None) -> Records:
    """One record per (rank, device, step): step, step_wall_us and the step's totals."""
    return Records({"rank": e["rank"], "device_id": e["device_id"], "step": s["step"],
                    "step_wall_us": s["step_wall_us"], **s["totals"]}
                   for e in _entries(trace_set, rank, top=0) for s in e["steps"])


def phases(trace_set: TraceSet, *, rank: int | None = None) -> Records:
    """One record per (rank, device, phase): GPU µs (sum of durations) and kernel count."""
    return Records({"rank": e["rank"], "device_id": e["device_id"], **p}
                   for e in _entries(trace_set, rank, top=0) for p in e["phases"])


def gaps(trace_set: TraceSet, *, min_gap_us: float = 5.0, top: int | None = None,
         rank: int | None = None) -> Records:
    """Idle and exposed-comm gaps at or above ``min_gap_us``, longest first, ``top`` per
    (rank, device); times relative to each rank's first GPU start."""
    return Records(g for e in _entries(trace_set, rank, min_gap_us=min_gap_us, top=top)
                   for g in e["gaps"])


def kernels(trace_set: TraceSet, *, rank: int | None = None) -> Records:
    """One record per (rank, device, kernel key): count, µs, mean b and occupancy, streams, class."""
    return Records({"rank": e["rank"], "device_id": e["device_id"], **k}
                   for e in _entries(trace_set, rank, top=None) for k in e["kernels"])
