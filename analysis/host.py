"""What a trace without GPU activity can still say: per-step and per-phase CPU time.

A CPU-only trace (the tiny trainer profiled on a laptop, or a CUDA trace whose GPU side was
lost) has no kernels, so every GPU metric is empty; its ``ProfilerStep#N`` annotations still
time the steps and its record_function ranges still time the phases on the host.
"""

from __future__ import annotations

import numpy as np

from speedtrace.analysis.events import Cat, RankTrace
from speedtrace.analysis.links import PROFILER_STEP


def host_report(rank_trace: RankTrace, *, step_range: tuple[int, int] | None = None) -> dict:
    """Per rank: steps with their CPU wall time, and CPU time per annotation name.

    ``phases`` sums the durations of the ``user_annotation`` ranges of each name that start in
    the kept steps (nested ranges each count their own time, so they overlap by design).
    Times are relative to the first kept step's start; ``origin_ts_us`` is absolute.
    """
    ev = rank_trace.events
    ann = np.flatnonzero(ev.cat == Cat.USER_ANNOTATION)
    steps = []
    for r in ann:
        m = PROFILER_STEP.match(ev.names[ev.name[r]])
        if m:
            n = int(m.group(1))
            if step_range is None or step_range[0] <= n <= step_range[1]:
                steps.append((n, float(ev.ts[r]), float(ev.dur[r])))
    steps.sort()
    origin = steps[0][1] if steps else (float(ev.ts.min()) if len(ev) else 0.0)
    step_entries = [{"step": n, "start_us": ts - origin, "step_wall_us": dur} for n, ts, dur in steps]

    in_steps = np.zeros(len(ann), dtype=bool)
    if steps:
        for _, ts, dur in steps:
            in_steps |= (ev.ts[ann] >= ts) & (ev.ts[ann] < ts + dur)
    else:
        in_steps[:] = True
    phases: dict[str, list[float]] = {}
    for r in ann[in_steps]:
        name = ev.names[ev.name[r]]
        if PROFILER_STEP.match(name):
            continue
        acc = phases.setdefault(name, [0.0, 0])
        acc[0] += float(ev.dur[r])
        acc[1] += 1
    phase_rows = sorted(({"phase": k, "cpu_us": v[0], "count": v[1]} for k, v in phases.items()),
                        key=lambda p: -p["cpu_us"])
    return {
        "rank": rank_trace.rank,
        "origin_ts_us": rank_trace.origin_ts_us + origin,
        "step_source": "cpu_annotation" if steps else "none",
        "steps": step_entries,
        "phases": phase_rows,
    }
