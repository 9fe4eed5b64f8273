"""Summary panes beside the timeline: time breakdown, overlap, top kernels, gaps over time.

Each figure is drawn from the public API (``steps``, ``totals``, ``kernels``, ``gaps`` of
``speedtrace.analysis``), so it shows exactly the numbers of the report. Names from traces go
through ``figures_timeline._label`` (escaped for plotly's HTML subset).
"""

from __future__ import annotations

from speedtrace.analysis.events import TraceSet
from speedtrace.analysis.figures_timeline import CLASS_COLORS, GAP_MARKERS, NAME_LIMIT, _label
from speedtrace.analysis.html_page import esc

BREAKDOWN = (("compute_us", "compute", CLASS_COLORS["compute"]),
             ("exposed_comm_us", "exposed comm", "#e45756"),
             ("exposed_memory_us", "exposed memory", "#b279a2"),
             ("idle_us", "idle", "#bab0ac"))
CAUSE_COLORS = {"host_late": "#4c78a8", "sync": "#e45756", "dependency": "#72b7b2"}
# Gaps listed in the gaps figure beyond which it switches to WebGL markers.
SVG_POINTS = 3000


def _ms(us) -> float | None:
    return None if us is None else us / 1000.0


def _who(rec: dict, multi_device: bool) -> str:
    return f"rank {rec['rank']}" + (f" · GPU {rec['device_id']}" if multi_device else "")


def _multi_device(records) -> bool:
    by_rank: dict[int, set] = {}
    for r in records:
        by_rank.setdefault(r["rank"], set()).add(r["device_id"])
    return any(len(v) > 1 for v in by_rank.values())


def _empty(fig, text: str):
    fig.update_layout(height=240)
    fig.add_annotation(text=esc(text), xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def breakdown(ts: TraceSet):
    """Per step and rank, stacked: compute + exposed comm + exposed memory + idle = the step's
    GPU span (metrics.md); whole-trace bars per rank when the trace has no step windows."""
    import plotly.graph_objects as go

    from speedtrace.analysis.metrics import steps, totals

    recs = list(steps(ts))
    per_step = bool(recs)
    if not per_step:
        recs = list(totals(ts))
    fig = go.Figure()
    title = f"GPU time per {'step' if per_step else 'trace'}: {_label(ts.path)}"
    if not recs:
        return _empty(fig.update_layout(title=title), "no GPU activity")
    multi = _multi_device(recs)
    who = [_who(r, multi) for r in recs]
    when = [f"step {r['step']}" if per_step else "whole trace" for r in recs]
    for key, name, color in BREAKDOWN:
        values = [_ms(r[key]) for r in recs]
        share = [100.0 * r[key] / r["span_us"] if r["span_us"] else 0.0 for r in recs]
        fig.add_trace(go.Bar(
            x=[who, when], y=values, name=name, marker_color=color, customdata=share,
            hovertemplate=f"%{{x}}<br>{name}: %{{y:,.3f}} ms (%{{customdata:.1f}}% of the span)<extra></extra>"))
    fig.update_layout(barmode="stack", title=title, yaxis_title="ms", legend=dict(orientation="h", y=1.08),
                      margin=dict(t=90), height=460)
    return fig


def overlap(ts: TraceSet):
    """Per rank: communication time hidden under compute (``overlap_us``) and exposed, labelled
    with ``comp_comm_overlap_pct``; SM contention and full-SM queueing in the hover."""
    import plotly.graph_objects as go

    from speedtrace.analysis.metrics import totals

    recs = list(totals(ts))
    fig = go.Figure()
    title = f"Communication hidden under compute, per rank: {_label(ts.path)}"
    fig.update_layout(title=title)
    if not any(r["comm_us"] for r in recs):
        return _empty(fig, "no communication kernels (NCCL/RCCL) in the trace")
    multi = _multi_device(recs)
    who = [_who(r, multi) for r in recs]
    extra = [[r["sm_contention_us"] / 1000.0, r["comm_queue_full_sm_us"] / 1000.0, r["comm_kernel_count"]]
             for r in recs]
    hover = ("%{x}<br>%{fullData.name}: %{y:,.3f} ms<br>comm under full SMs: %{customdata[0]:,.3f} ms"
             "<br>queued behind full SMs: %{customdata[1]:,.3f} ms<br>comm kernels: %{customdata[2]:,}"
             "<extra></extra>")
    fig.add_trace(go.Bar(x=who, y=[_ms(r["overlap_us"]) for r in recs], name="overlapped with compute",
                         marker_color="#54a24b", customdata=extra, hovertemplate=hover))
    fig.add_trace(go.Bar(
        x=who, y=[_ms(r["exposed_comm_us"]) for r in recs], name="exposed", marker_color="#e45756",
        customdata=extra, hovertemplate=hover,
        text=[f"{r['comp_comm_overlap_pct']:.1f}% hidden" if r["comp_comm_overlap_pct"] is not None else ""
              for r in recs], textposition="outside"))
    fig.update_layout(barmode="stack", yaxis_title="comm time (ms)", legend=dict(orientation="h", y=1.08),
                      margin=dict(t=90), height=440)
    return fig


def kernels(ts: TraceSet, top: int = 20):
    """The ``top`` kernel keys by GPU time, summed over ranks: count, mean µs, mean blocks/SM
    (time-weighted) and class in the hover."""
    import plotly.graph_objects as go

    from speedtrace.analysis.metrics import kernels as kernel_records

    agg: dict[str, dict] = {}
    for r in kernel_records(ts):
        a = agg.setdefault(r["key"], {"total_us": 0.0, "count": 0, "b_w": 0.0, "b_t": 0.0,
                                      "class": r["class"], "ranks": set()})
        a["total_us"] += r["total_us"]
        a["count"] += r["count"]
        a["ranks"].add(r["rank"])
        if r["mean_blocks_per_sm"] is not None:
            a["b_w"] += r["mean_blocks_per_sm"] * r["total_us"]
            a["b_t"] += r["total_us"]
    rows = sorted(agg.items(), key=lambda kv: (-kv[1]["total_us"], kv[0]))[:top]
    n_ranks = len(ts.ranks)
    fig = go.Figure()
    title = f"Top {len(rows)} kernels by GPU time{' (all ranks)' if n_ranks > 1 else ''}: {_label(ts.path)}"
    fig.update_layout(title=title)
    if not rows:
        return _empty(fig, "no GPU activity")
    rows.reverse()  # largest at the top of a horizontal bar chart
    for cls in ("compute", "comm", "memory"):
        mine = [(k, a) for k, a in rows if a["class"] == cls]
        if not mine:
            continue
        fig.add_trace(go.Bar(
            orientation="h", name=cls, marker_color=CLASS_COLORS[cls],
            y=[_label(k, NAME_LIMIT) for k, _ in mine], x=[a["total_us"] / 1000.0 for _, a in mine],
            customdata=[[a["count"], a["total_us"] / a["count"],
                         a["b_w"] / a["b_t"] if a["b_t"] > 0 else None] for _, a in mine],
            hovertemplate="<b>%{y}</b><br>%{x:,.3f} ms in %{customdata[0]:,} launches, mean "
                          "%{customdata[1]:,.1f} µs<br>mean blocks/SM %{customdata[2]:.2f}<extra></extra>"))
    order = [_label(k, NAME_LIMIT) for k, _ in rows]
    fig.update_layout(yaxis=dict(categoryorder="array", categoryarray=order, automargin=True,
                                 tickfont=dict(size=10)),
                      xaxis_title="GPU time (ms)", height=max(400, 24 * len(rows) + 160),
                      legend=dict(orientation="h", y=1.04), margin=dict(t=90))
    return fig


def gaps(ts: TraceSet, *, min_gap_us: float = 5.0):
    """Every idle and exposed-comm gap of at least ``min_gap_us``: when it began (ms from its
    rank's first GPU start) and how long it lasted, coloured by cause, with phase and CPU op."""
    import plotly.graph_objects as go

    from speedtrace.analysis.metrics import gaps as gap_records

    recs = list(gap_records(ts, min_gap_us=min_gap_us))
    fig = go.Figure()
    fig.update_layout(title=f"Gaps of at least {min_gap_us:g} µs over time, by cause: {_label(ts.path)}")
    if not recs:
        return _empty(fig, f"no gaps of at least {min_gap_us:g} µs")
    trace = go.Scattergl if len(recs) > SVG_POINTS else go.Scatter
    symbols = {"idle": "circle", "exposed_comm": "diamond"}
    for cause in sorted({r["cause"] for r in recs}):
        for kind in ("idle", "exposed_comm"):
            mine = [r for r in recs if r["cause"] == cause and r["kind"] == kind]
            if not mine:
                continue
            fig.add_trace(trace(
                x=[r["start_us"] / 1000.0 for r in mine], y=[r["dur_us"] for r in mine], mode="markers",
                name=f"{esc(cause)} ({'idle' if kind == 'idle' else 'exposed comm'})",
                marker=dict(color=CAUSE_COLORS.get(cause, GAP_MARKERS["idle"]), symbol=symbols[kind], size=7,
                            opacity=0.75),
                text=[f"rank {r['rank']} · step {r['step'] if r['step'] is not None else '—'}<br>phase: "
                      f"{_label(r['phase'] or '—')}<br>CPU op: {_label(r['cpu_op'] or '—')}" for r in mine],
                hovertemplate="%{y:,.1f} µs at %{x:,.3f} ms<br>%{text}<extra></extra>"))
    fig.update_layout(xaxis_title="start (ms from the rank's first GPU event)", yaxis_title="duration (µs)",
                      yaxis_type="log", legend=dict(orientation="h", y=1.08), margin=dict(t=90), height=460)
    return fig
