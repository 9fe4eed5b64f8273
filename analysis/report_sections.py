"""The report as a ``Document`` of sections (analysis/sections.py), from the report dict.

``report_sections`` reads only the dict that ``report.build_report`` returns (the JSON of
``speedtrace report``), so text, markdown and HTML say exactly what the JSON says. With more
than ``DETAIL_ALL_UP_TO`` (rank, device) entries, a per-rank table comes first and the details
follow for the worst entry only (largest share of span not computing).

Section keys (for renderers that add figures): ``run``, ``hosts``, ``ranks``, ``cross_rank``,
``entry``, ``steps``, ``gaps``, ``kernels``, ``collectives``, ``collective_phases``.
"""

from __future__ import annotations

from typing import Any

from speedtrace.analysis import fmt
from speedtrace.analysis.collectives import phase_summary, top_by_exposed
from speedtrace.analysis.sections import Document, Facts, Para, Section, Table
from speedtrace.profiling.verdict import steal_text

DETAIL_ALL_UP_TO = 2
STEP_LINES = 20  # per-step rows shown before "... n more"
HOST_PHASES = 12


def who(entry: dict) -> str:
    device = entry.get("device") or "unknown GPU"
    sms = entry.get("num_sms")
    sms = f", {sms} SMs" if sms else ""
    return f"rank {entry.get('rank')} · device {entry.get('device_id')} ({device}{sms})"


def breakdown(totals: dict) -> list[tuple[str, Any]]:
    """The four parts of the span, in the order every output shows them."""
    return [("compute", totals.get("compute_us")),
            ("exposed comm", totals.get("exposed_comm_us")),
            ("exposed memory", totals.get("exposed_memory_us")),
            ("idle", totals.get("idle_us"))]


def _badness(entry: dict) -> float:
    """Share of the span not spent computing (exposed comm and memory, idle): highest first."""
    t = entry.get("totals", {})
    span = fmt.number(t.get("span_us"))
    if not span:
        return -1.0
    return 1.0 - (fmt.number(t.get("compute_us")) or 0.0) / span


def detail_entries(report: dict) -> tuple[list[dict], str | None]:
    """The entries to show in full, and a note when only the worst of many is shown."""
    entries = report.get("ranks", [])
    if len(entries) <= DETAIL_ALL_UP_TO:
        return entries, None
    worst = max(entries, key=_badness)
    return [worst], (f"details for the worst of {len(entries)} entries (largest share of span "
                     f"not computing): rank {worst.get('rank')}, device {worst.get('device_id')}")


def run_line(run: dict | None) -> str | None:
    """One line on how the run was profiled (dilation, step and host times, mode)."""
    if not run:
        return None
    parts = []
    if fmt.number(run.get("dilation")) is not None:
        target = run.get("dilation_target")
        parts.append(f"dilation {run['dilation']:.3f}" + (f" (target {target})" if target else ""))
    if run.get("profiled_step_ms") and run.get("unprofiled_step_ms"):
        parts.append(f"profiled {fmt.median(run['profiled_step_ms']):.1f} ms per step vs "
                     f"{fmt.median(run['unprofiled_step_ms']):.1f} ms unprofiled")
    if run.get("profiled_host_ms") and run.get("unprofiled_host_ms"):
        parts.append(f"host done {fmt.median(run['profiled_host_ms']):.1f} ms into the profiled step "
                     f"({fmt.median(run['unprofiled_host_ms']):.1f} unprofiled)")
    stolen = steal_text(run)
    if stolen:
        parts.append(stolen)
    if run.get("mode"):
        parts.append(f"mode {run['mode']}")
    if run.get("cuda_graphs"):
        # Replayed kernels have no CPU op of their own: they hang off cudaGraphLaunch.
        parts.append("micro-batches replayed as CUDA graphs (no CPU ops inside forward/backward)")
    return "run: " + ", ".join(parts) if parts else None


def overlap_text(t: dict) -> str:
    if not fmt.number(t.get("comm_us")):
        return "no comm kernels"
    return (f"{fmt.pct(t.get('comp_comm_overlap_pct'))} of comm time overlaps compute "
            f"({fmt.us(t.get('overlap_us'))} of {fmt.us(t.get('comm_us'))} µs)")


def sm_text(t: dict) -> str:
    coverage = t.get("achieved_occupancy_coverage_pct")
    covered = f" (estimated for {fmt.pct(coverage)} of compute kernel time)" if fmt.number(coverage) else ""
    sm = (f"est. SM efficiency {fmt.pct(t.get('est_sm_efficiency_pct'))}, achieved occupancy "
          f"{fmt.pct(t.get('achieved_occupancy_pct'))}{covered}")
    if not t.get("comm_kernel_count"):
        return sm
    return (f"{sm}; comm on full SMs {fmt.us(t.get('sm_contention_us'))} µs; "
            f"comm queueing: ready but not started {fmt.us(t.get('comm_queue_us'))} µs "
            f"({fmt.us(t.get('comm_queue_full_sm_us'))} µs while compute held every SM), "
            f"waiting for inputs {fmt.us(t.get('comm_wait_inputs_us'))} µs")


def select_backward_text(t: dict) -> str:
    return (f"{fmt.count(t.get('select_backward_kernels'), 'dedicated kernel')} "
            f"({fmt.us(t.get('select_backward_us'))} µs), {t.get('select_backward_fused_kernels')} fused, "
            f"{fmt.count(t.get('select_backward_cpu_ops'), 'aten::select_backward op')}")


def _gaps_title(entry: dict, min_gap_us: float) -> str:
    below = entry.get("gaps_below_threshold") or {}
    extra = ""
    if below.get("count"):
        extra = f"; {below['count']} shorter, {fmt.us(below.get('total_us'))} µs in all"
    return f"longest gaps (≥ {min_gap_us:g} µs{extra})"


def _host_section(host: dict) -> Section:
    """A rank without GPU activity: its steps' CPU wall time and its phases' CPU time."""
    blocks: list = []
    if host["steps"]:
        blocks.append(Table(["step", "wall ms"], [[str(s["step"]), fmt.ms(s["step_wall_us"])]
                                                  for s in host["steps"]], right=frozenset({0, 1})))
    else:
        blocks.append(Para("no ProfilerStep annotations: no per-step times"))
    if host["phases"]:
        blocks.append(Table(["phase (record_function)", "count", "CPU ms"],
                            [[fmt.short(p["phase"]), str(p["count"]), fmt.ms(p["cpu_us"])]
                             for p in host["phases"][:HOST_PHASES]],
                            right=frozenset({1, 2}), code=frozenset({0})))
    return Section("hosts", f"rank {host['rank']} · no GPU activity: host-side times only "
                            f"(steps from {host['step_source']})", blocks)


def _ranks_section(entries: list[dict]) -> Section:
    rows = []
    for e in entries:
        t = e.get("totals", {})
        span = t.get("span_us")
        rows.append([str(e.get("rank")), str(e.get("device_id")), fmt.ms(span),
                     *(fmt.share(v, span) for _, v in breakdown(t)),
                     fmt.pct(t.get("comp_comm_overlap_pct")), fmt.pct(t.get("est_sm_efficiency_pct"))])
    table = Table(["rank", "dev", "span ms", "compute", "exp comm", "exp mem", "idle", "overlap", "SM eff"],
                  rows, right=frozenset(range(2, 9)))
    return Section("ranks", "", [table])


def _entry_sections(entry: dict, min_gap_us: float) -> list[Section]:
    t = entry.get("totals", {})
    span = t.get("span_us")
    head = Section("entry", f"{who(entry)}, steps from {entry.get('step_source', 'none')}", [
        Para(f"span {fmt.us(span)} µs, GPU busy {fmt.share(t.get('busy_us'), span)}, "
             f"{t.get('kernel_count', 0)} kernels ({t.get('comm_kernel_count', 0)} comm)"),
        Table(["", "µs", "% of span"], [[label, fmt.us(v), fmt.share(v, span)]
                                        for label, v in breakdown(t)], right=frozenset({1, 2})),
        Facts([("overlap", overlap_text(t)), ("SMs", sm_text(t)),
               ("select_backward", select_backward_text(t))]),
    ])
    out = [head]

    steps = entry.get("steps") or []
    if steps:
        rows = []
        for s in steps[:STEP_LINES]:
            st = s.get("totals", {})
            rows.append([str(s.get("step")), fmt.ms(s.get("step_wall_us")), fmt.ms(st.get("span_us")),
                         fmt.share(st.get("compute_us"), st.get("span_us")),
                         fmt.share(st.get("exposed_comm_us"), st.get("span_us")),
                         fmt.share(st.get("idle_us"), st.get("span_us")),
                         fmt.pct(st.get("comp_comm_overlap_pct"))])
        more = (f"... {len(steps) - STEP_LINES} more steps (see --format json or --steps)"
                if len(steps) > STEP_LINES else None)
        out.append(Section("steps", "steps", [Table(
            ["step", "wall ms", "span ms", "compute", "exp comm", "idle", "overlap"], rows,
            right=frozenset(range(7)), more=more)], level=2))
    elif entry.get("step_source", "none") == "none":
        out.append(Section("steps", "steps", [Para(
            "none found (no ProfilerStep annotations); totals cover the whole trace")], level=2))

    gaps = entry.get("gaps") or []
    if gaps:
        rows = []
        for g in gaps:
            step = g.get("step")
            rows.append([g.get("kind", ""), fmt.us(g.get("dur_us")), fmt.us(g.get("start_us")),
                         "-" if step is None else str(step), fmt.short(g.get("phase") or "-", 40),
                         fmt.short(g.get("cpu_op") or "-", 40), g.get("cause") or "-"])
        gap_block = Table(["kind", "µs", "start µs", "step", "phase", "cpu_op", "cause"], rows,
                          right=frozenset({1, 2, 3}), code=frozenset({4, 5}))
    else:
        gap_block = Para("none")
    out.append(Section("gaps", _gaps_title(entry, min_gap_us), [gap_block], level=2))

    kernels = entry.get("kernels") or []
    if kernels:
        rows = [[fmt.kernel_name(k.get("key")), str(k.get("class", "")), str(k.get("count", "")),
                 fmt.us(k.get("total_us")), fmt.us(k.get("mean_us")), fmt.us(k.get("max_us")),
                 fmt.num(k.get("mean_blocks_per_sm")), fmt.pct(k.get("mean_occupancy_pct"))]
                for k in kernels]
        out.append(Section("kernels", "top kernels", [Table(
            ["kernel", "class", "count", "total µs", "mean µs", "max µs", "b/SM", "occ"], rows,
            right=frozenset(range(2, 8)), code=frozenset({0}))], level=2))
    return out


def size_text(nbytes) -> str:
    """A message size in B, KB, MB or GB (powers of 1000, as nccl-tests prints them)."""
    v = fmt.number(nbytes)
    if v is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v:.0f} B"


def _or_dash(v) -> str:
    return "-" if v is None else str(v)


def _collective_sections(entry: dict, top: int) -> list[Section]:
    """The collectives of one entry: the most exposed first, and a summary per launch phase."""
    rows_in = entry.get("collectives") or []
    if not rows_in:
        return []
    launched = sum(1 for r in rows_in if r.get("queue_us") is not None)
    shown = top_by_exposed(rows_in, top)
    rows = [[str(r.get("kind")), _or_dash(r.get("step")), fmt.short(r.get("launch_phase") or "-", 32),
             fmt.ms(r.get("start_us")), fmt.us(r.get("dur_us")), fmt.us(r.get("exposed_us")),
             fmt.us(r.get("wait_inputs_us")), fmt.us(r.get("wait_sms_us")), fmt.us(r.get("wait_sms_full_sm_us")),
             size_text(r.get("bytes")), fmt.num(r.get("busbw_gbps"))] for r in shown]
    more = (f"... {len(rows_in) - len(shown)} more (see --format json)" if len(rows_in) > len(shown) else None)
    title = (f"collectives ({len(rows_in)} comm kernels, {launched} launched in the trace; most exposed first; "
             "start from the step's first GPU start)")
    table = Table(["kind", "step", "launch phase", "start ms", "dur µs", "exposed µs", "wait inputs µs",
                   "wait SMs µs", "on full SMs", "size", "busbw GB/s"], rows,
                  right=frozenset({1, 3, 4, 5, 6, 7, 8, 9, 10}), code=frozenset({2}), more=more)
    phase_rows = [[fmt.short("- (launch not in the trace)" if p["launch_phase"] is None else p["launch_phase"], 40),
                   ", ".join(p["kinds"]), str(p["count"]), size_text(p["bytes"]), fmt.us(p["dur_us"]),
                   fmt.us(p["exposed_us"]), fmt.us(p["wait_inputs_us"]), fmt.us(p["wait_sms_us"])]
                  for p in phase_summary(rows_in)]
    phases = Table(["launch phase", "kinds", "count", "size", "µs", "exposed µs", "wait inputs µs",
                    "wait SMs µs"], phase_rows, right=frozenset(range(2, 8)), code=frozenset({0}))
    return [Section("collectives", title, [table], level=2),
            Section("collective_phases", "collectives by launch phase", [phases], level=2)]


CROSS_RANK_ROWS = 16
CROSS_RANK_STEPS = 8


def cross_rank_section(cross: dict | None) -> Section | None:
    """Collectives across ranks: what matched, the straggler, and arrival lateness per rank and
    step (mean over the step's matched collectives, ms)."""
    if not cross:
        return None
    un = cross.get("unmatched") or {}
    head = f"{cross.get('matched', 0)} collectives matched on every rank of their process group"
    if un.get("count"):
        parts = []
        if un.get("no_step"):
            parts.append(f"{un['no_step']} outside every profiler step")
        if un.get("partial"):
            parts.append(f"{un['partial']} not on every rank")
        head += f"; {un['count']} collective kernels not matched ({', '.join(parts)})"
    blocks: list = [Para(head)]
    if cross.get("straggler"):
        blocks.append(Para(cross["straggler"]))
    cells = cross.get("lateness") or []
    if cells:
        steps = sorted({c["step"] for c in cells if c.get("step") is not None})
        shown_steps = steps[-CROSS_RANK_STEPS:]
        by = {(c["rank"], c["step"]): c for c in cells}
        stragglers = {s["rank"]: s for s in cross.get("stragglers") or []}
        ranks = sorted({c["rank"] for c in cells})
        if len(ranks) > CROSS_RANK_ROWS:
            ranks = sorted(sorted(ranks, key=lambda r: -(stragglers.get(r, {}).get("wait_caused_us") or 0.0))
                           [:CROSS_RANK_ROWS])
        rows = []
        for r in ranks:
            row = [str(r)]
            for st in shown_steps:
                c = by.get((r, st))
                row.append(fmt.ms(c["late_total_us"] / c["instances"]) if c and c["instances"] else "-")
            s = stragglers.get(r, {})
            row += [str(s.get("last_count", 0)), fmt.ms(s.get("wait_caused_us"))]
            rows.append(row)
        notes = []
        if len(steps) > len(shown_steps):
            notes.append(f"the last {len(shown_steps)} of {len(steps)} steps")
        if len({c['rank'] for c in cells}) > len(ranks):
            notes.append(f"the {len(ranks)} ranks that caused the most waiting")
        more = f"... showing {' and '.join(notes)} (see --format json)" if notes else None
        blocks.append(Para("arrival lateness (ms after the first rank's start, mean over the step's "
                           "collectives); last: collectives it arrived last at; wait caused: the other "
                           "ranks' waiting there, summed"))
        blocks.append(Table(["rank", *(f"step {st}" for st in shown_steps), "last", "wait caused ms"], rows,
                            right=frozenset(range(len(shown_steps) + 3)), more=more))
    return Section("cross_rank", "collectives across ranks", blocks)


def report_sections(report: dict) -> Document:
    """The ``Document`` of a report dict: warnings, the run line, hosts, ranks, details."""
    min_gap_us = fmt.number((report.get("options") or {}).get("min_gap_us")) or 0.0
    doc = Document("report", "speedtrace report", str(report.get("path", "")),
                   warnings=list(report.get("warnings", [])))
    line = run_line(report.get("run"))
    if line:
        doc.sections.append(Section("run", "", [Para(line)]))
    for host in report.get("hosts", []):
        doc.sections.append(_host_section(host))
    entries = report.get("ranks", [])
    if not entries:
        if not report.get("hosts"):
            doc.sections.append(Section("entry", "", [Para("no GPU activity in this trace set: nothing to report")]))
        return doc
    if len(entries) > DETAIL_ALL_UP_TO:
        doc.sections.append(_ranks_section(entries))
    across = cross_rank_section(report.get("cross_rank"))
    if across is not None:
        doc.sections.append(across)
    shown, note = detail_entries(report)
    if note:
        doc.sections.append(Section("note", "", [Para(note, kind="note")]))
    top = (report.get("options") or {}).get("top")
    top = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 10
    for entry in shown:
        doc.sections += _entry_sections(entry, min_gap_us)
        doc.sections += _collective_sections(entry, top)
    return doc
