"""The report: one dict per trace set (metrics.md "Report JSON"), and its text and markdown forms.

``build_report`` assembles the per-(rank, device) entries that ``metrics.device_report`` computes,
adds the run's profiling metadata and the warnings a reader must see before trusting the numbers.
``report_sections`` turns that dict into sections and ``render`` draws them, so every output
says the same thing.
"""

from __future__ import annotations

import math
import os
from typing import Any

from speedtrace.analysis.fmt import median as _median
from speedtrace.analysis.fmt import number as _number
from speedtrace.analysis.fmt import number_list as _number_list
from speedtrace.errors import SpeedtraceError
from speedtrace.profiling import runinfo
from speedtrace.profiling.verdict import host_bound, host_times

SCHEMA = "speedtrace.report/1"
DILATION_LIMIT = 1.10  # above this the run's profiled steps are visibly slower than untraced ones
# Beyond this many (rank, device) entries the text shows one table row per rank and details
# for the worst one only.
DETAIL_ALL_UP_TO = 2
STEP_LINES = 20  # per-step lines shown before "... n more"
NAME_WIDTH = 60

_DILATING_OPTIONS = ("record_shapes", "with_stack", "profile_memory")
_DILATION_EFFECT = ("its timings are dilated and part of its idle time is the profiler's own: "
                    "idle_us, the host_late share of gaps and step times are inflated")


# ----------------------------------------------------------------------------------------------
# Assembly


def build_report(trace_set, *, steps: tuple[int, int] | None = None, rank: int | None = None,
                 top: int | None = 10, min_gap_us: float = 5.0) -> dict:
    """The report dict of ``trace_set`` (a loaded ``TraceSet``), shaped as metrics.md specifies.

    ``steps`` (first, last), inclusive, restricts every number to the GPU activity of those
    profiler steps (as ``device_report`` does); ``rank`` keeps one rank; ``top`` caps the gap and kernel lists; gaps shorter than
    ``min_gap_us`` are only counted. Asking for a rank or steps the trace set lacks raises
    ``SpeedtraceError`` naming the trace set and what it has.
    """
    from speedtrace.analysis.cross_rank import cross_rank
    from speedtrace.analysis.host import host_report
    from speedtrace.analysis.metrics import device_metrics, report_entry

    rank_traces = list(trace_set.ranks)
    if rank is not None:
        rank_traces = [rt for rt in rank_traces if rt.rank == rank]
        if not rank_traces:
            have = ", ".join(str(rt.rank) for rt in trace_set.ranks) or "none"
            raise SpeedtraceError(f"{trace_set.path}: no rank {rank} (ranks present: {have})")

    warnings = list(trace_set.warnings)
    warnings += _dilation_warnings(trace_set, rank_traces)
    entries, hosts, tables = [], [], []
    for rt in rank_traces:
        devices = rt.gpu_devices()
        # A rank without GPU activity (the loader has warned) still times its steps on the host.
        if not devices:
            hosts.append(host_report(rt, step_range=steps))
        for device_id in devices:
            m = device_metrics(rt, device_id, trace_set.run, step_range=steps, min_gap_us=min_gap_us,
                               top=top)
            entries.append(report_entry(m, top))
            if m.collective_table is not None and len(m.collective_table.idx):
                tables.append(m.collective_table)
    for e in entries:  # e.g. step windows that could not be found
        warnings += [w for w in e.get("warnings", []) if w not in warnings]
    # Collectives across ranks: only where two ranks or more ran some.
    across = cross_rank(tables, step_range=steps) if len({t.rank.rank for t in tables}) > 1 else None
    if across is not None:
        warnings += [w for w in across.pop("warnings") if w not in warnings]
    if steps is not None and (entries or hosts) and not any(e.get("steps") for e in entries + hosts):
        raise SpeedtraceError(f"{trace_set.path}: no profiler steps in {_steps_label(steps)} "
                              f"({_steps_present(rank_traces, trace_set.run)})")
    return {
        "schema": SCHEMA,
        "path": str(trace_set.path),
        "options": {"steps": list(steps) if steps else None, "rank": rank, "top": top,
                    "min_gap_us": min_gap_us},
        "run": run_summary(trace_set.run),
        "warnings": warnings,
        "ranks": entries,
        "hosts": hosts,
        "cross_rank": across,
    }


def run_summary(run) -> dict | None:
    """The report's ``run`` object from run.json (a ``RunInfo``); dilation is worked out when
    run.json omits it."""
    run = runinfo.coerce(run)
    if run is None:
        return None
    profiled = _number_list(run.profiled_step_ms)
    unprofiled = _number_list(run.unprofiled_step_ms)
    dilation = _number(run.dilation)
    if dilation is None and profiled and unprofiled:
        dilation = _median(profiled) / _median(unprofiled)
    steal = run.steal_ms or runinfo.Steal()
    return {"dilation": dilation, "unprofiled_step_ms": unprofiled, "profiled_step_ms": profiled,
            "mode": run.mode, "cuda_graphs": run.cuda_graphs,
            "unprofiled_host_ms": _number_list(run.unprofiled_host_ms),
            "profiled_host_ms": _number_list(run.profiled_host_ms),
            "host_bound": {kind: _host_bound(run, kind) for kind in ("unprofiled", "profiled")},
            "dilation_target": _number(run.dilation_target),
            "steal_ms": {kind: _number(getattr(steal, kind)) for kind in ("unprofiled", "profiled")}}


def _host_bound(run: runinfo.RunInfo, kind: str) -> bool | None:
    """run.json's ``host_bound`` verdict for ``kind`` (unprofiled/profiled); worked out from the
    host and step times when run.json predates the field."""
    if run.host_bound is not None:
        return getattr(run.host_bound, kind)
    return host_bound(_number_list(getattr(run, f"{kind}_host_ms")),
                      _number_list(getattr(run, f"{kind}_step_ms")))


def _dilation_warnings(trace_set, rank_traces) -> list[str]:
    """One warning per distinct set of dilating profiler options, plus one for run.json."""
    out = []
    by_options: dict[tuple[str, ...], list] = {}
    for rt in rank_traces:
        options = tuple(o for o in _DILATING_OPTIONS if getattr(rt, o, False))
        if options:
            by_options.setdefault(options, []).append(rt)
    for options, traces in by_options.items():
        if len(traces) == 1:
            where = traces[0].path
        else:
            where = f"{trace_set.path} ({len(traces)} rank files)"
        out.append(f"{where}: traced with {', '.join(options)}; {_DILATION_EFFECT}")
    run = run_summary(trace_set.run)
    if run and run["dilation"] is not None and run["dilation"] > DILATION_LIMIT:
        detail = ""
        if run["profiled_step_ms"] and run["unprofiled_step_ms"]:
            detail = (f" ({_median(run['profiled_step_ms']):.1f} ms per step profiled vs "
                      f"{_median(run['unprofiled_step_ms']):.1f} ms without the profiler)")
        bound = (f"; the host was the critical path: {host_times(run, 'profiled')}"
                 if run["host_bound"]["profiled"] else "")
        out.append(f"{os.path.join(str(trace_set.path), 'run.json')}: dilation "
                   f"{run['dilation']:.2f}{detail}; {_DILATION_EFFECT}{bound}")
    if run and run["host_bound"]["unprofiled"]:
        out.append(f"{os.path.join(str(trace_set.path), 'run.json')}: the unprofiled steps were host-bound "
                   f"({host_times(run, 'unprofiled')}): the host, not the GPU, set their length, so the "
                   "step times and the dilation measure how fast the host was at the time")
    return out


def _steps_label(steps: tuple[int, int]) -> str:
    a, b = steps
    return f"step {a}" if a == b else f"steps {a}-{b}"


def _steps_present(rank_traces, run) -> str:
    """What steps the trace set does have, for the error message."""
    from speedtrace.analysis.timeline import device_timeline

    have = set()
    for rt in rank_traces:
        for device_id in rt.gpu_devices():
            have.update(int(n) for n in device_timeline(rt, device_id, run).steps.steps)
    if not have:
        return "the trace has no profiler steps"
    ordered = sorted(have)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"the trace has steps {ordered[0]}-{ordered[-1]}"
    return "the trace has steps " + ", ".join(map(str, ordered))


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None and numpy scalars and arrays as plain Python."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
