"""The report: one dict per trace set (metrics.md "Report JSON"), and its text and markdown forms.

``build_report`` assembles the per-(rank, device) entries that ``metrics.device_report`` computes,
adds the run's profiling metadata and the warnings a reader must see before trusting the numbers;
``render_text`` and ``render_markdown`` only format that dict, so every output says the same thing.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from speedtrace.analysis.tables import md_escape, md_table, text_table
from speedtrace.errors import SpeedtraceError
from speedtrace.profiling.verdict import host_bound, host_times, steal_text

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
    from speedtrace.analysis.host import host_report
    from speedtrace.analysis.metrics import device_report

    rank_traces = list(trace_set.ranks)
    if rank is not None:
        rank_traces = [rt for rt in rank_traces if rt.rank == rank]
        if not rank_traces:
            have = ", ".join(str(rt.rank) for rt in trace_set.ranks) or "none"
            raise SpeedtraceError(f"{trace_set.path}: no rank {rank} (ranks present: {have})")

    warnings = list(trace_set.warnings)
    warnings += _dilation_warnings(trace_set, rank_traces)
    entries, hosts = [], []
    for rt in rank_traces:
        devices = rt.gpu_devices()
        # A rank without GPU activity (the loader has warned) still times its steps on the host.
        if not devices:
            hosts.append(host_report(rt, step_range=steps))
        for device_id in devices:
            entries.append(device_report(rt, device_id, trace_set.run, step_range=steps,
                                         min_gap_us=min_gap_us, top=top))
    for e in entries:  # e.g. step windows that could not be found
        warnings += [w for w in e.get("warnings", []) if w not in warnings]
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
    }


def run_summary(run: dict | None) -> dict | None:
    """The report's ``run`` object from run.json; dilation is worked out when run.json omits it."""
    if not isinstance(run, dict):
        return None
    profiled = _number_list(run.get("profiled_step_ms"))
    unprofiled = _number_list(run.get("unprofiled_step_ms"))
    dilation = _number(run.get("dilation"))
    if dilation is None and profiled and unprofiled:
        dilation = _median(profiled) / _median(unprofiled)
    steal = run.get("steal_ms") if isinstance(run.get("steal_ms"), dict) else {}
    return {"dilation": dilation, "unprofiled_step_ms": unprofiled, "profiled_step_ms": profiled,
            "mode": run.get("mode") if isinstance(run.get("mode"), str) else None,
            "cuda_graphs": run.get("cuda_graphs") if isinstance(run.get("cuda_graphs"), bool) else None,
            "unprofiled_host_ms": _number_list(run.get("unprofiled_host_ms")),
            "profiled_host_ms": _number_list(run.get("profiled_host_ms")),
            "host_bound": {kind: _host_bound(run, kind) for kind in ("unprofiled", "profiled")},
            "dilation_target": _number(run.get("dilation_target")),
            "steal_ms": {kind: _number(steal.get(kind)) for kind in ("unprofiled", "profiled")}}


def _host_bound(run: dict, kind: str) -> bool | None:
    """run.json's ``host_bound`` verdict for ``kind`` (unprofiled/profiled); worked out from the
    host and step times when run.json predates the field."""
    given = run.get("host_bound")
    if isinstance(given, dict) and kind in given:
        return given[kind] if isinstance(given[kind], bool) else None
    return host_bound(_number_list(run.get(f"{kind}_host_ms")), _number_list(run.get(f"{kind}_step_ms")))


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


def _number(x) -> float | None:
    """A finite float (numpy numbers included), or None for null, NaN, text or booleans."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return float(x) if math.isfinite(x) else None


def _number_list(xs) -> list[float]:
    if not isinstance(xs, (list, tuple)):
        return []
    return [v for v in (_number(x) for x in xs) if v is not None]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# ----------------------------------------------------------------------------------------------
# Shared helpers for both renderers


def _us(x) -> str:
    v = _number(x)
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"


def _ms(x_us) -> str:
    v = _number(x_us)
    return "n/a" if v is None else f"{v / 1000:,.2f}"


def _pct(x) -> str:
    v = _number(x)
    return "n/a" if v is None else f"{v:.1f}%"


def _share(part, whole) -> str:
    p, w = _number(part), _number(whole)
    if p is None or not w:
        return "n/a"
    return f"{100 * p / w:.1f}%"


def _short(name, width: int = NAME_WIDTH) -> str:
    name = "" if name is None else str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def _kernel_name(name, width: int = NAME_WIDTH) -> str:
    """A long C++ kernel name without ``void`` and with its call arguments folded, cut to
    ``width``: in ``void ns::kernel<cfg...>(args...)`` the name and template tell kernels apart."""
    name = "" if name is None else str(name)
    if len(name) <= width:
        return name
    if name.startswith("void "):
        name = name[5:]
    out, depth = [], 0
    for ch in name:
        if ch == "(":
            if depth == 0:
                out.append("(…")
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(")")
        elif depth == 0:
            out.append(ch)
    return _short("".join(out), width)


def _who(entry: dict) -> str:
    device = entry.get("device") or "unknown GPU"
    sms = entry.get("num_sms")
    sms = f", {sms} SMs" if sms else ""
    return f"rank {entry.get('rank')} · device {entry.get('device_id')} ({device}{sms})"


def _breakdown(totals: dict) -> list[tuple[str, Any]]:
    return [("compute", totals.get("compute_us")),
            ("exposed comm", totals.get("exposed_comm_us")),
            ("exposed memory", totals.get("exposed_memory_us")),
            ("idle", totals.get("idle_us"))]


def _badness(entry: dict) -> float:
    """Share of the span not spent computing (exposed comm and memory, idle): highest first."""
    t = entry.get("totals", {})
    span = _number(t.get("span_us"))
    if not span:
        return -1.0
    return 1.0 - (_number(t.get("compute_us")) or 0.0) / span


def detail_entries(report: dict) -> tuple[list[dict], str | None]:
    """The entries to show in full, and a note when only the worst of many is shown."""
    entries = report.get("ranks", [])
    if len(entries) <= DETAIL_ALL_UP_TO:
        return entries, None
    worst = max(entries, key=_badness)
    return [worst], (f"details for the worst of {len(entries)} entries (largest share of span "
                     f"not computing): rank {worst.get('rank')}, device {worst.get('device_id')}")


def _run_line(run: dict | None) -> str | None:
    if not run:
        return None
    parts = []
    if _number(run.get("dilation")) is not None:
        target = run.get("dilation_target")
        parts.append(f"dilation {run['dilation']:.3f}" + (f" (target {target})" if target else ""))
    if run.get("profiled_step_ms") and run.get("unprofiled_step_ms"):
        parts.append(f"profiled {_median(run['profiled_step_ms']):.1f} ms per step vs "
                     f"{_median(run['unprofiled_step_ms']):.1f} ms unprofiled")
    if run.get("profiled_host_ms") and run.get("unprofiled_host_ms"):
        parts.append(f"host done {_median(run['profiled_host_ms']):.1f} ms into the profiled step "
                     f"({_median(run['unprofiled_host_ms']):.1f} unprofiled)")
    stolen = steal_text(run)
    if stolen:
        parts.append(stolen)
    if run.get("mode"):
        parts.append(f"mode {run['mode']}")
    if run.get("cuda_graphs"):
        # Replayed kernels have no CPU op of their own: they hang off cudaGraphLaunch.
        parts.append("micro-batches replayed as CUDA graphs (no CPU ops inside forward/backward)")
    return "run: " + ", ".join(parts) if parts else None


def _overlap_text(t: dict) -> str:
    if not _number(t.get("comm_us")):
        return "no comm kernels"
    return (f"{_pct(t.get('comp_comm_overlap_pct'))} of comm time overlaps compute "
            f"({_us(t.get('overlap_us'))} of {_us(t.get('comm_us'))} µs)")


def _sm_text(t: dict) -> str:
    sm = (f"est. SM efficiency {_pct(t.get('est_sm_efficiency_pct'))}, achieved occupancy "
          f"{_pct(t.get('achieved_occupancy_pct'))}")
    if not t.get("comm_kernel_count"):
        return sm
    return (f"{sm}; comm on full SMs {_us(t.get('sm_contention_us'))} µs; "
            f"comm queueing {_us(t.get('comm_queue_us'))} µs "
            f"({_us(t.get('comm_queue_full_sm_us'))} µs while compute held every SM)")


def _count(n, noun: str) -> str:
    n = "n/a" if n is None else n
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _select_backward_text(t: dict) -> str:
    return (f"{_count(t.get('select_backward_kernels'), 'dedicated kernel')} "
            f"({_us(t.get('select_backward_us'))} µs), {t.get('select_backward_fused_kernels')} fused, "
            f"{_count(t.get('select_backward_cpu_ops'), 'aten::select_backward op')}")


def _gap_where(g: dict) -> tuple[str, str, str, str]:
    step = g.get("step")
    return ("-" if step is None else str(step), g.get("phase") or "-", g.get("cpu_op") or "-",
            g.get("cause") or "-")


def _min_gap(report: dict) -> float:
    return _number((report.get("options") or {}).get("min_gap_us")) or 0.0


def _gaps_title(entry: dict, min_gap_us) -> str:
    below = entry.get("gaps_below_threshold") or {}
    extra = ""
    if below.get("count"):
        extra = f"; {below['count']} shorter, {_us(below.get('total_us'))} µs in all"
    return f"longest gaps (≥ {min_gap_us:g} µs{extra})"


# ----------------------------------------------------------------------------------------------
# Text


def render_text(report: dict) -> str:
    """A plain-text summary meant to be read in half a minute: warnings first, then per device."""
    min_gap_us = _min_gap(report)
    lines = [f"speedtrace report: {report.get('path', '')}"]
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    run_line = _run_line(report.get("run"))
    if run_line:
        lines.append(run_line)
    entries = report.get("ranks", [])
    for host in report.get("hosts", []):
        lines.append("")
        lines += _text_host(host)
    if not entries:
        if not report.get("hosts"):
            lines.append("no GPU activity in this trace set: nothing to report")
        return "\n".join(lines) + "\n"
    if len(entries) > DETAIL_ALL_UP_TO:
        lines.append("")
        lines += _text_rank_table(entries)
    shown, note = detail_entries(report)
    if note:
        lines += ["", note]
    for entry in shown:
        lines.append("")
        lines += _text_entry(entry, min_gap_us)
    return "\n".join(lines) + "\n"


def _text_host(host: dict) -> list[str]:
    """A rank without GPU activity: its steps' CPU wall time and its phases' CPU time."""
    lines = [f"rank {host['rank']} · no GPU activity: host-side times only "
             f"(steps from {host['step_source']})"]
    if host["steps"]:
        rows = [["step", "wall ms"]] + [[str(s["step"]), _ms(s["step_wall_us"])] for s in host["steps"]]
        lines += text_table(rows, right={0, 1}, indent="  ")
    else:
        lines.append("  no ProfilerStep annotations: no per-step times")
    if host["phases"]:
        rows = [["phase (record_function)", "count", "CPU ms"]]
        rows += [[_short(p["phase"]), str(p["count"]), _ms(p["cpu_us"])] for p in host["phases"][:12]]
        lines += text_table(rows, right={1, 2}, indent="  ")
    return lines




def _text_rank_table(entries: list[dict]) -> list[str]:
    rows = [["rank", "dev", "span ms", "compute", "exp comm", "exp mem", "idle", "overlap", "SM eff"]]
    for e in entries:
        t = e.get("totals", {})
        span = t.get("span_us")
        rows.append([str(e.get("rank")), str(e.get("device_id")), _ms(span),
                     *(_share(v, span) for _, v in _breakdown(t)),
                     _pct(t.get("comp_comm_overlap_pct")), _pct(t.get("est_sm_efficiency_pct"))])
    return text_table(rows, right=set(range(2, 9)))


def _text_entry(entry: dict, min_gap_us) -> list[str]:
    t = entry.get("totals", {})
    span = t.get("span_us")
    lines = [f"{_who(entry)}, steps from {entry.get('step_source', 'none')}",
             f"  span {_us(span)} µs, GPU busy {_share(t.get('busy_us'), span)}, "
             f"{t.get('kernel_count', 0)} kernels ({t.get('comm_kernel_count', 0)} comm)"]
    rows = [[label, f"{_us(v)} µs", _share(v, span)] for label, v in _breakdown(t)]
    lines += text_table(rows, right={1, 2}, indent="    ")
    lines.append(f"  overlap: {_overlap_text(t)}")
    lines.append(f"  SMs: {_sm_text(t)}")
    lines.append(f"  select_backward: {_select_backward_text(t)}")

    steps = entry.get("steps") or []
    if steps:
        lines.append("  steps:")
        rows = [["step", "wall ms", "span ms", "compute", "exp comm", "idle", "overlap"]]
        for s in steps[:STEP_LINES]:
            st = s.get("totals", {})
            rows.append([str(s.get("step")), _ms(s.get("step_wall_us")), _ms(st.get("span_us")),
                         _share(st.get("compute_us"), st.get("span_us")),
                         _share(st.get("exposed_comm_us"), st.get("span_us")),
                         _share(st.get("idle_us"), st.get("span_us")),
                         _pct(st.get("comp_comm_overlap_pct"))])
        lines += text_table(rows, right=set(range(7)), indent="    ")
        if len(steps) > STEP_LINES:
            lines.append(f"    ... {len(steps) - STEP_LINES} more steps (see --format json or --steps)")
    elif entry.get("step_source", "none") == "none":
        lines.append("  steps: none found (no ProfilerStep annotations); totals cover the whole trace")

    gaps = entry.get("gaps") or []
    lines.append(f"  {_gaps_title(entry, min_gap_us)}:")
    if gaps:
        rows = [["kind", "µs", "step", "phase", "cpu_op", "cause"]]
        for g in gaps:
            step, phase, op, cause = _gap_where(g)
            rows.append([g.get("kind", ""), _us(g.get("dur_us")), step, _short(phase, 40),
                         _short(op, 40), cause])
        lines += text_table(rows, right={1, 2}, indent="    ")
    else:
        lines.append("    none")

    kernels = entry.get("kernels") or []
    if kernels:
        lines.append("  top kernels:")
        rows = [["kernel", "class", "count", "total µs", "mean µs", "b/SM", "occ"]]
        for k in kernels:
            rows.append([_kernel_name(k.get("key")), str(k.get("class", "")), str(k.get("count", "")),
                         _us(k.get("total_us")), _us(k.get("mean_us")),
                         _num(k.get("mean_blocks_per_sm")), _pct(k.get("mean_occupancy_pct"))])
        lines += text_table(rows, right={2, 3, 4, 5, 6}, indent="    ")
    return lines


def _num(x) -> str:
    v = _number(x)
    return "n/a" if v is None else f"{v:.2f}"


# ----------------------------------------------------------------------------------------------
# Markdown


def render_markdown(report: dict) -> str:
    """The report as GitHub-flavoured markdown (tables), for pull requests and issues."""
    min_gap_us = _min_gap(report)
    out = [f"# speedtrace report: `{report.get('path', '')}`", ""]
    warnings = report.get("warnings", [])
    if warnings:
        out += [f"> **warning:** {md_escape(w)}" + "  " for w in warnings]
        out.append("")
    run_line = _run_line(report.get("run"))
    if run_line:
        out += [run_line[0].upper() + run_line[1:], ""]
    entries = report.get("ranks", [])
    if not entries:
        out.append("No GPU activity in this trace set: nothing to report.")
        return "\n".join(out) + "\n"

    out += ["## Breakdown (% of GPU span)", ""]
    rows = [["rank", "device", "span ms", "compute", "exposed comm", "exposed memory", "idle",
             "comm overlap", "SM efficiency", "occupancy"]]
    for e in entries:
        t = e.get("totals", {})
        span = t.get("span_us")
        rows.append([str(e.get("rank")), f"{e.get('device_id')} {e.get('device') or ''}".strip(),
                     _ms(span), *(_share(v, span) for _, v in _breakdown(t)),
                     _pct(t.get("comp_comm_overlap_pct")), _pct(t.get("est_sm_efficiency_pct")),
                     _pct(t.get("achieved_occupancy_pct"))])
    out += md_table(rows, right=set(range(2, 10))) + [""]

    shown, note = detail_entries(report)
    if note:
        out += [f"_{note[0].upper() + note[1:]}._", ""]
    for entry in shown:
        out += _md_entry(entry, min_gap_us)
    return "\n".join(out) + "\n"






def _md_entry(entry: dict, min_gap_us) -> list[str]:
    t = entry.get("totals", {})
    span = t.get("span_us")
    out = [f"## {_who(entry)}", "",
           f"Steps from `{entry.get('step_source', 'none')}`; span {_us(span)} µs, GPU busy "
           f"{_share(t.get('busy_us'), span)}, {t.get('kernel_count', 0)} kernels "
           f"({t.get('comm_kernel_count', 0)} comm).", ""]
    rows = [["", "µs", "% of span"]] + [[label, _us(v), _share(v, span)] for label, v in _breakdown(t)]
    out += md_table(rows, right={1, 2}) + [""]
    out += [f"- **Overlap:** {_overlap_text(t)}",
            f"- **SMs:** {_sm_text(t)}",
            f"- **select_backward:** {_select_backward_text(t)}", ""]

    steps = entry.get("steps") or []
    if steps:
        rows = [["step", "wall ms", "span ms", "compute", "exposed comm", "idle", "overlap"]]
        for s in steps:
            st = s.get("totals", {})
            rows.append([str(s.get("step")), _ms(s.get("step_wall_us")), _ms(st.get("span_us")),
                         _share(st.get("compute_us"), st.get("span_us")),
                         _share(st.get("exposed_comm_us"), st.get("span_us")),
                         _share(st.get("idle_us"), st.get("span_us")), _pct(st.get("comp_comm_overlap_pct"))])
        out += ["### Steps", ""] + md_table(rows, right=set(range(7))) + [""]

    gaps = entry.get("gaps") or []
    out += [f"### {_gaps_title(entry, min_gap_us)[0].upper() + _gaps_title(entry, min_gap_us)[1:]}", ""]
    if gaps:
        rows = [["kind", "µs", "start µs", "step", "phase", "cpu_op", "cause"]]
        for g in gaps:
            step, phase, op, cause = _gap_where(g)
            rows.append([g.get("kind", ""), _us(g.get("dur_us")), _us(g.get("start_us")), step,
                         f"`{phase}`" if phase != "-" else phase, f"`{op}`" if op != "-" else op, cause])
        out += md_table(rows, right={1, 2, 3}) + [""]
    else:
        out += ["None.", ""]

    kernels = entry.get("kernels") or []
    if kernels:
        rows = [["kernel", "class", "count", "total µs", "mean µs", "max µs", "blocks/SM", "occupancy"]]
        for k in kernels:
            rows.append([f"`{_kernel_name(k.get('key'), 80)}`", str(k.get("class", "")), str(k.get("count", "")),
                         _us(k.get("total_us")), _us(k.get("mean_us")), _us(k.get("max_us")),
                         _num(k.get("mean_blocks_per_sm")), _pct(k.get("mean_occupancy_pct"))])
        out += ["### Top kernels", ""] + md_table(rows, right=set(range(2, 8))) + [""]
    return out
