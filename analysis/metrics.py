"""The metrics of docs/metrics.md per (rank, device): one ``DeviceMetrics`` record each.

``device_metrics`` builds a device's timeline once and computes from it everything the report,
the diff and the figures read: the additive ``Sums`` of the whole selection and of each step,
phases, gaps, the kernel table, and (for ``diff``) kernel and gap-group sums per step.
``report_entry`` turns a record into one rank entry of the report JSON; ``device_report`` does
both. The public functions ``totals``, ``steps``, ``phases``, ``gaps`` and ``kernels`` return
the same numbers over a whole ``TraceSet`` as ``Records`` (one dict per row).

Choices where metrics.md leaves room:
- The full-SM set used by ``comm_queue_full_sm_us`` is the whole device's (a queued NCCL kernel
  can wait behind compute of the previous step); every other total uses only the selected
  events (a step's own activity).
- With ``step_range``, whole-trace totals, phases, gaps and kernels cover the GPU activity of
  the selected steps only; the span then runs from their first start to their last end.
- ``select_backward_cpu_ops`` counts the rank's ``aten::select_backward`` ops (all devices of a
  rank share them); per step it counts those starting inside the step's CPU annotation and is
  null for other step sources.
- Per-step gap groups (``gap_groups``, for the diff) are the gaps inside each step's own GPU span, as for the
  step's ``idle_us``; they are grouped by kind and ``phase_group`` (Inductor's compiled-graph
  ranges without their hash, which changes whenever the compiled code does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis import select_backward as sb
from speedtrace.analysis import sums as sm
from speedtrace.analysis.collectives import CollectiveTable, collective_table, collectives
from speedtrace.analysis.comm_queue import comm_readiness
from speedtrace.analysis.events import Cat, RankTrace, Records, TraceSet
from speedtrace.analysis.gaps import gap_table
from speedtrace.analysis.kernels import kernel_table, key_index
from speedtrace.analysis.links import PROFILER_STEP
from speedtrace.analysis.memo import keep_last
from speedtrace.analysis.sums import TOTAL_KEYS, Sums, sums_of  # noqa: F401  (TOTAL_KEYS re-exported)
from speedtrace.analysis.timeline import DeviceTimeline, device_timeline

_COMPILED_GRAPH = re.compile(r"^## Call CompiledFxGraph \S+ ##$")


@dataclass
class StepMetrics:
    step: int
    wall_us: float | None        # the step's CPU annotation (or recorded window), when known
    start_us: float | None       # its first GPU start, relative to the rank's first GPU start
    sums: Sums


@dataclass
class DeviceMetrics:
    """Everything measured on one (rank, device); times relative to ``origin_ts_us``.

    The diff's tables, filled only when asked for (``for_diff``; the report needs none of
    them): ``kernel_sums`` maps (kernel key, step or None for the whole selection) to
    (count, µs), with each key's class, launching aten ops and phases; ``gap_groups`` maps
    ((kind, phase group), step or None) to (count, µs) of the gaps of at least ``min_gap_us``.
    """

    rank: int
    device_id: int
    device: str | None
    num_sms: int | None
    origin_ts_us: float
    step_source: str
    min_gap_us: float
    whole: Sums
    unassigned_gpu_us: float | None
    steps: list[StepMetrics]
    phases: list[dict]
    gaps: list[dict]
    gaps_below: dict
    kernels: list[dict]
    warnings: list[str]
    collectives: list[dict] = field(default_factory=list)  # collectives.ROW_KEYS per comm kernel
    collective_table: CollectiveTable | None = None  # every comm kernel, for cross_rank
    kernel_sums: dict = field(default_factory=dict)
    kernel_class: dict[str, str] = field(default_factory=dict)
    launch_ops: dict[str, set[str]] = field(default_factory=dict)   # kernel key -> aten ops
    kernel_phases: dict[str, set] = field(default_factory=dict)      # kernel key -> phases
    gap_groups: dict = field(default_factory=dict)

    def active_steps(self) -> list[int]:
        """The steps with GPU activity."""
        return [s.step for s in self.steps if s.sums.span_us > 0 or s.sums.kernel_count]


def phase_group(phase: str | None) -> str | None:
    """The phase a gap is grouped under: Inductor's ``## Call CompiledFxGraph <hash> ##``
    without the hash (so a before/after pair does not show every group of a compiled graph as
    disappeared and appeared again)."""
    if phase is None:
        return None
    return _COMPILED_GRAPH.sub("## Call CompiledFxGraph ##", phase)


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


def device_metrics(rank_trace: RankTrace, device_id: int, run=None, *,
                   step_range: tuple[int, int] | None = None, min_gap_us: float = 5.0,
                   top: int | None = None, for_diff: bool = False) -> DeviceMetrics:
    """The ``DeviceMetrics`` of one device of a rank.

    ``step_range`` (first, last), inclusive, keeps those steps: the whole-selection sums,
    phases, gaps and kernels then cover their GPU activity only. ``top`` caps the gap list
    (longest first; the kernel table stays whole). ``for_diff`` also tallies kernels and every
    gap, whole and per step, by key and by (kind, phase group), as ``diff`` compares them.
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

    whole = sums_of(tl, sel, whole_ops)
    unassigned = (None if tl.steps.source == "none" else
                  iv.length(iv.union(tl.start[sel & (step_of < 0)], tl.end[sel & (step_of < 0)])))
    steps = []
    for n in numbers:
        m = step_of == n
        ops = int((op_step == n).sum()) if cpu_steps else None
        steps.append(StepMetrics(n, tl.steps.wall_us.get(n),
                                 float(tl.start[m].min() - first_gpu) if m.any() else None,
                                 sums_of(tl, m, ops)))

    gap_list, below = gap_table(tl, sel, min_gap_us=min_gap_us, top=top)
    for g in gap_list:
        g["start_us"] -= first_gpu
    info = rank_trace.devices.get(device_id)
    out = DeviceMetrics(
        rank=rank_trace.rank, device_id=device_id, device=info.name if info is not None else None,
        num_sms=tl.num_sms, origin_ts_us=rank_trace.origin_ts_us + first_gpu,
        step_source=tl.steps.source, min_gap_us=min_gap_us, whole=whole, unassigned_gpu_us=unassigned,
        steps=steps, phases=_phase_table(tl, sel), gaps=gap_list, gaps_below=below,
        kernels=kernel_table(tl, sel), warnings=list(tl.steps.warnings),
        collectives=collectives(tl, sel), collective_table=collective_table(tl))
    if tl.is_comm[sel].any():
        out.warnings += comm_readiness(tl).warnings
    if for_diff:
        _kernel_sums(out, tl, sel)
        _gap_groups(out, tl, sel)
    return out


def _kernel_sums(out: DeviceMetrics, tl, sel: np.ndarray) -> None:
    """Per full kernel key: (count, µs) whole and per active step, its class, launching aten
    ops and phases (what ``diff`` matches kernels by)."""
    ev = tl.rank.events
    rows = tl.rows
    if len(rows) == 0:
        return
    # Full keys (name and launch configuration): diff shows the configuration where needed.
    keys, idx = key_index(tl.rank, rows)
    dur = tl.end - tl.start
    step_of = tl.steps.step_of
    for step, mask in [(None, sel)] + [(s, sel & (step_of == s)) for s in out.active_steps()]:
        n = np.bincount(idx[mask], minlength=len(keys))
        us = np.bincount(idx[mask], weights=dur[mask], minlength=len(keys))
        for i in np.flatnonzero(n):
            out.kernel_sums[(keys[i], step)] = (int(n[i]), float(us[i]))
    # A key is one class in practice; comm, then memory, win ties (as in the kernel table).
    rank_of_class = np.where(tl.is_comm, 2, np.where(tl.is_compute, 0, 1))
    best = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(best, idx, rank_of_class)
    out.kernel_class = {k: ("compute", "memory", "comm")[c] for k, c in zip(keys, best)}
    has_op = tl.cpu_op >= 0
    pairs = np.unique(np.stack([idx[has_op], ev.name[tl.cpu_op[has_op]]]), axis=1)
    for i, code in pairs.T.tolist():
        op = ev.names[code]
        if op.startswith("aten::"):
            out.launch_ops.setdefault(keys[i], set()).add(op)
    phase_code = np.where(tl.phase >= 0, ev.name[np.maximum(tl.phase, 0)], -1)
    for i, code in np.unique(np.stack([idx, phase_code]), axis=1).T.tolist():
        out.kernel_phases.setdefault(keys[i], set()).add(ev.names[code] if code >= 0 else None)


def _gap_groups(out: DeviceMetrics, tl, sel: np.ndarray) -> None:
    step_of = tl.steps.step_of
    for step, mask in [(None, sel)] + [(s, sel & (step_of == s)) for s in out.active_steps()]:
        found, _ = gap_table(tl, mask, min_gap_us=out.min_gap_us, top=None)
        for g in found:
            key = ((g["kind"], phase_group(g["phase"])), step)
            n, us = out.gap_groups.get(key, (0, 0.0))
            out.gap_groups[key] = (n + 1, us + g["dur_us"])


def report_entry(m: DeviceMetrics, top: int | None = None) -> dict:
    """One rank entry of the report JSON (metrics.md "Report JSON") from a ``DeviceMetrics``;
    ``top`` caps the gap and kernel lists; ``phase`` is None for GPU work launched under no
    annotation other than ProfilerStep#N."""
    whole = sm.totals(m.whole)
    whole["unassigned_gpu_us"] = m.unassigned_gpu_us
    gaps = m.gaps if top is None else m.gaps[:max(top, 0)]
    kernels = m.kernels if top is None else m.kernels[:top]
    return {
        "rank": m.rank,
        "device_id": m.device_id,
        "device": m.device,
        "num_sms": m.num_sms,
        "origin_ts_us": m.origin_ts_us,
        "step_source": m.step_source,
        "totals": whole,
        "steps": [{"step": s.step, "step_wall_us": s.wall_us, "start_us": s.start_us,
                   "totals": sm.totals(s.sums)} for s in m.steps],
        "phases": m.phases,
        "gaps": gaps,
        "gaps_below_threshold": m.gaps_below,
        "kernels": kernels,
        "collectives": m.collectives,
        "warnings": list(m.warnings),
    }


def device_report(rank_trace: RankTrace, device_id: int, run=None, *,
                  step_range: tuple[int, int] | None = None, min_gap_us: float = 5.0,
                  top: int | None = None) -> dict:
    """The rank entry of the report JSON for one device of a rank (``device_metrics`` then
    ``report_entry``). Times in it are relative to the rank's first GPU start, carried as
    ``origin_ts_us``."""
    m = device_metrics(rank_trace, device_id, run, step_range=step_range, min_gap_us=min_gap_us,
                       top=top)
    return report_entry(m, top)


# ------------------------------------------------------------------------- public API


@keep_last()
def _metrics_by_min_gap(trace_set: TraceSet) -> dict[float, list[DeviceMetrics]]:
    """min_gap_us -> the ``DeviceMetrics`` of every (rank, device), filled on demand: the
    public functions below (and the figures built on them) share one computation per trace
    set instead of each building every timeline again."""
    return {}


def _entries(trace_set: TraceSet, rank: int | None, *, min_gap_us: float = 5.0, top: int | None = None):
    by_gap = _metrics_by_min_gap(trace_set)
    if min_gap_us not in by_gap:
        by_gap[min_gap_us] = [device_metrics(rt, d, trace_set.run, min_gap_us=min_gap_us)
                              for rt in trace_set.ranks for d in rt.gpu_devices()]
    for m in by_gap[min_gap_us]:
        if rank is None or m.rank == rank:
            yield report_entry(m, top)


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
    return Records(dict(g) for e in _entries(trace_set, rank, min_gap_us=min_gap_us, top=top)
                   for g in e["gaps"])


def kernels(trace_set: TraceSet, *, rank: int | None = None) -> Records:
    """One record per (rank, device, kernel key): count, µs, mean b and occupancy, streams, class."""
    return Records({"rank": e["rank"], "device_id": e["device_id"], **k}
                   for e in _entries(trace_set, rank, top=None) for k in e["kernels"])
