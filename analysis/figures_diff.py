"""Figures of a diff document (``speedtrace.analysis.diff.build_diff``; metrics.md "Diff JSON").

Drawn only from the document, so they say what ``speedtrace diff`` says: the metrics before and
after with the per-step noise band, a waterfall of the kernel changes, select_backward dedicated
and fused kernels, and the gap groups that moved.
"""

from __future__ import annotations

import math

from speedtrace.analysis.figures_timeline import NAME_LIMIT, _label
from speedtrace.analysis.html_page import esc
from speedtrace.analysis.noise import NOISE_SPREADS

TIME_METRICS = ("span_us", "busy_us", "idle_us", "compute_us", "comm_us", "overlap_us", "exposed_comm_us",
                "exposed_memory_us", "sm_contention_us", "comm_queue_full_sm_us", "select_backward_us")
STATUS_COLORS = {"added": "#e45756", "removed": "#54a24b", "renamed": "#4c78a8", "absorbed": "#b279a2",
                 "changed": "#f58518", "same": "#bab0ac", "other": "#d3d3d3", "total": "#333333"}
BEFORE, AFTER = "#9ecae9", "#4c78a8"
WATERFALL_TOP = 25


def _status(k: dict) -> str:
    """The waterfall colour of a kernel entry: renamed (matched Triton kernel), absorbed (an
    eager kernel whose op a fused kernel took over), else the diff's own status."""
    if k.get("matched_from"):
        return "renamed"
    if k.get("absorbed_into"):
        return "absorbed"
    return k.get("status") or "changed"


def metrics_figure(d: dict):
    """One small panel per time metric: before and after (ms), the after bar's error bar is the
    pooled per-step spread, and the shaded band is before ± NOISE_SPREADS spreads (inside it a
    change is within noise)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = [k for k in TIME_METRICS if k in d.get("metrics", {})]
    cols = 4
    rows = max(1, math.ceil(len(keys) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[k.removesuffix("_us") for k in keys],
                        vertical_spacing=0.12, horizontal_spacing=0.06)
    for i, key in enumerate(keys):
        m = d["metrics"][key]
        r, c = i // cols + 1, i % cols + 1
        b, a, spread = m.get("before"), m.get("after"), m.get("spread")
        if b is None and a is None:
            continue
        err = dict(type="data", array=[0, spread / 1000.0], visible=True) if spread else None
        verdict = "significant" if m.get("significant") else "within noise"
        pct = f" ({m['delta_pct']:+.1f}%)" if m.get("delta_pct") is not None else ""
        p = f", p = {m['p']:.2g}" if m.get("p") is not None else ""
        fig.add_trace(go.Bar(
            x=["before", "after"], y=[None if b is None else b / 1000.0, None if a is None else a / 1000.0],
            marker_color=[BEFORE, AFTER if m.get("significant") else "#bab0ac"], error_y=err, showlegend=False,
            hovertemplate=f"{key}<br>%{{x}}: %{{y:,.3f}} ms<br>Δ {(m.get('delta') or 0) / 1000.0:+,.3f} ms{pct}"
                          f"<br>{verdict}{p}<extra></extra>"), row=r, col=c)
        if spread and b is not None:
            lo, hi = (b - NOISE_SPREADS * spread) / 1000.0, (b + NOISE_SPREADS * spread) / 1000.0
            fig.add_hrect(y0=max(lo, 0.0), y1=hi, fillcolor="rgba(120,120,120,0.15)", line_width=0, row=r, col=c)
    basis = esc(d.get("units", {}).get("metrics", d.get("basis", "")))
    fig.update_layout(title=f"Metrics before and after ({basis}); bar: ±1 per-step spread, band: ±{NOISE_SPREADS:g} "
                            "spreads around before", height=260 * rows + 80, margin=dict(t=90))
    fig.update_yaxes(title_text="ms", col=1)
    return fig


def kernel_waterfall(d: dict, top: int = WATERFALL_TOP):
    """How the kernel time went from before to after: the ``top`` entries by |Δµs| as a
    horizontal waterfall coloured by status, the rest as one bar, then the net change."""
    import plotly.graph_objects as go

    entries = [k for k in d.get("kernels", []) if k.get("delta_us")]
    entries.sort(key=lambda k: (-abs(k["delta_us"]), k["key"]))
    shown, rest = entries[:top], entries[top:]
    unit = esc(d.get("units", {}).get("kernels", ""))
    fig = go.Figure()
    fig.update_layout(title=f"Kernel time change, largest first (µs {unit})")
    if not shown:
        fig.add_annotation(text="no kernel time changed", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False)
        return fig
    labels, bases, deltas, colors, texts = [], [], [], [], []
    running = 0.0
    for k in shown:
        status = _status(k)
        labels.append(_label(k["key"], 80))
        bases.append(running if k["delta_us"] >= 0 else running + k["delta_us"])
        deltas.append(abs(k["delta_us"]))
        colors.append(STATUS_COLORS.get(status, STATUS_COLORS["changed"]))
        extra = ""
        if k.get("matched_from"):
            extra = f"<br>renamed from {_label(k['matched_from'], NAME_LIMIT)}"
        elif k.get("absorbed_into"):
            extra = f"<br>absorbed into {_label(k['absorbed_into'], NAME_LIMIT)}"
        if k.get("absorbed"):
            extra += f"<br>absorbed {len(k['absorbed'])} eager kernel(s)"
        texts.append(f"<b>{_label(k['key'], NAME_LIMIT)}</b><br>{esc(status)}: {k['before_us']:,.1f} → "
                     f"{k['after_us']:,.1f} µs (Δ {k['delta_us']:+,.1f})<br>count {k['before_count']} → "
                     f"{k['after_count']}{extra}")
        running += k["delta_us"]
    if rest:
        other = sum(k["delta_us"] for k in rest)
        labels.append(f"{len(rest)} other kernels")
        bases.append(running if other >= 0 else running + other)
        deltas.append(abs(other))
        colors.append(STATUS_COLORS["other"])
        texts.append(f"{len(rest)} other kernels: Δ {other:+,.1f} µs")
        running += other
    labels.append("net change")
    bases.append(min(0.0, running))
    deltas.append(abs(running))
    colors.append(STATUS_COLORS["total"])
    texts.append(f"net kernel time change: {running:+,.1f} µs")
    fig.add_trace(go.Bar(orientation="h", y=labels, x=deltas, base=bases, marker_color=colors, text=texts,
                         hovertemplate="%{text}<extra></extra>", textposition="none", showlegend=False))
    for status in ("added", "removed", "renamed", "absorbed", "changed", "same"):  # a legend of colours
        fig.add_trace(go.Bar(x=[None], y=[None], orientation="h", name=status,
                             marker_color=STATUS_COLORS[status]))
    fig.update_layout(yaxis=dict(autorange="reversed", automargin=True, tickfont=dict(size=10),
                                 categoryorder="array", categoryarray=labels),
                      xaxis_title="Δ kernel time (µs)", height=max(400, 22 * len(labels) + 160),
                      legend=dict(orientation="h", y=1.04), margin=dict(t=90), barmode="overlay")
    fig.add_vline(x=0, line_width=1, line_color="#333")
    return fig


def select_backward_figure(d: dict):
    """select_backward: dedicated kernels (count and µs) and fused kernels (count), before and after."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    m = d.get("metrics", {})
    fig = make_subplots(rows=1, cols=2, subplot_titles=["kernels", "dedicated kernel time (µs)"])
    for side, color in (("before", BEFORE), ("after", AFTER)):
        counts = [(m.get(k) or {}).get(side) for k in ("select_backward_kernels", "select_backward_fused_kernels")]
        fig.add_trace(go.Bar(x=["dedicated", "fused"], y=counts, name=side, marker_color=color,
                             legendgroup=side, hovertemplate=f"{side}: %{{y:,.1f}} %{{x}} kernels<extra></extra>"),
                      row=1, col=1)
        us = (m.get("select_backward_us") or {}).get(side)
        fig.add_trace(go.Bar(x=["dedicated"], y=[us], name=side, marker_color=color, legendgroup=side,
                             showlegend=False, hovertemplate=f"{side}: %{{y:,.1f}} µs<extra></extra>"),
                      row=1, col=2)
    unit = esc(d.get("units", {}).get("metrics", ""))
    fig.update_layout(title=f"select_backward kernels, dedicated vs fused ({unit})", barmode="group",
                      margin=dict(t=90), legend=dict(orientation="h", y=1.1), height=420)
    return fig


def gap_groups_figure(d: dict, top: int = 15):
    """Gap time per (kind, phase) before and after, the ``top`` groups that moved most."""
    import plotly.graph_objects as go

    groups = sorted(d.get("gaps", []), key=lambda g: -abs(g.get("delta_us") or 0.0))[:top]
    fig = go.Figure()
    unit = esc(d.get("units", {}).get("gaps", ""))
    fig.update_layout(title=f"Gap time by kind and phase, before and after (µs {unit})")
    if not groups:
        fig.add_annotation(text="no gaps on either side", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False)
        return fig
    labels = [f"{esc(g['kind'])} · {_label(g['phase'] or '—', 60)}" for g in groups]
    for side, color in (("before", BEFORE), ("after", AFTER)):
        fig.add_trace(go.Bar(
            orientation="h", y=labels, x=[g[side]["total_us"] for g in groups], name=side, marker_color=color,
            customdata=[[g[side]["count"], esc(g["status"])] for g in groups],
            hovertemplate=f"%{{y}}<br>{side}: %{{x:,.1f}} µs in %{{customdata[0]}} gaps "
                          "(%{customdata[1]})<extra></extra>"))
    fig.update_layout(barmode="group", yaxis=dict(autorange="reversed", automargin=True),
                      height=max(350, 40 * len(groups) + 160), legend=dict(orientation="h", y=1.06),
                      margin=dict(t=90), xaxis_title="µs")
    return fig


def diff_figures(d: dict) -> dict:
    """name -> figure for a diff document: ``metrics``, ``kernels`` (waterfall),
    ``select_backward`` and ``gaps``. (The aligned timelines need the traces themselves:
    ``figures.timeline_pair(before_ts, after_ts)``.)"""
    return {"metrics": metrics_figure(d), "kernels": kernel_waterfall(d),
            "select_backward": select_backward_figure(d), "gaps": gap_groups_figure(d)}
