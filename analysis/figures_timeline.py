"""The step timeline: GPU lanes per rank and stream, gap bands, phases and SM usage, in plotly.

Layout, top to bottom for each (rank, device): a phase band (the annotations around the
launches), one lane per stream, the idle / exposed-comm / exposed-memory gaps shaded across
those lanes; under all of them, on a second y axis, one SM-usage track per (rank, device).

Scale: a training step has tens of thousands of kernels, and plotly's SVG bars (or layout
shapes) become unusable past about ten thousand. Kernels are therefore drawn as WebGL line
segments (``Scattergl``, one segment per kernel, NaN between segments), one trace per class and
chunk of at most ``MAX_POINTS`` points; their hover is carried by an invisible marker at each
kernel's midpoint (one text per kernel, not one per vertex). Bands and the SM track are WebGL
polygons (``fill="toself"``). Layout shapes are used only for the few step boundaries.

Every name from the trace goes through ``_label`` (bidi and control characters made visible,
then HTML-escaped): plotly renders a small HTML subset in hover text and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.events import RankTrace, TraceSet
from speedtrace.analysis.gaps import _attribute, _covering, gap_table
from speedtrace.analysis.html_page import esc
from speedtrace.analysis.sections import safe_text
from speedtrace.analysis.timeline import DeviceTimeline, device_timeline
from speedtrace.errors import SpeedtraceError

# Points per WebGL trace: plotly's regl renderer slows down on very long single traces.
MAX_POINTS = 60_000
# The SM-usage track shows Σ blocks/SM up to this value (the true value is in the hover).
SM_CLIP = 2.0
MIN_GAP_US = 5.0
# Names in hover text are cut to this many characters: C++ template kernel names run to
# over a thousand, and each kernel carries its own copy in the figure.
NAME_LIMIT = 140
# Phase instances that overlap go to sub-rows of the phase band; beyond this many they share
# the last one.
MAX_PHASE_ROWS = 3

CLASS_COLORS = {"compute": "#4c78a8", "comm": "#f58518", "memory": "#54a24b"}
CLASS_NAMES = {"compute": "compute kernel", "comm": "comm kernel (NCCL)", "memory": "memcpy / memset"}
GAP_COLORS = {"idle": "rgba(110,110,110,0.28)", "exposed_comm": "rgba(228,26,28,0.22)",
              "exposed_memory": "rgba(152,78,163,0.30)"}
GAP_MARKERS = {"idle": "#6e6e6e", "exposed_comm": "#e41a1c", "exposed_memory": "#984ea3"}
GAP_NAMES = {"idle": "idle gap", "exposed_comm": "exposed comm", "exposed_memory": "exposed memory"}
PHASE_COLORS = {"data": "#9ecae9", "forward": "#88d27a", "backward": "#ffbf79",
                "optimizer": "#d6a5c9", "reduce": "#f2cf5b", "update": "#b79a20", "gather": "#e1a2a2"}
OTHER_PHASE_COLORS = ("#bab0ac", "#d4a6c8", "#9d755d", "#b6992d", "#8cd17d", "#86bcb6", "#f1ce63",
                      "#a0cbe8", "#ff9d9a", "#79706e")
CONTENTION_COLOR = "rgba(214,39,40,0.35)"
QUEUE_COLOR = "rgba(214,39,40,0.18)"
ROW_PX = 26          # height of one lane in pixels
SM_ROW_PX = 46       # height of one SM-usage track
LINE_PX = 14         # thickness of a kernel bar


def _label(text, limit: int | None = None) -> str:
    """A name from the trace, safe to put in plotly text: visible escapes, cut to ``limit``
    characters (with "…"), then HTML-escaped."""
    s = safe_text(text)
    if limit is not None and len(s) > limit:
        s = s[:limit - 1] + "…"
    return esc(s)


def _num(x: float, digits: int):
    """``x`` rounded for JSON (an int when ``digits`` is 0); None for NaN."""
    if x != x:
        return None
    return int(round(x)) if digits == 0 else round(float(x), digits)


def _us(x: float) -> str:
    if not np.isfinite(x):
        return "?"
    return f"{x:,.1f} µs" if abs(x) < 10_000 else f"{x / 1000:,.3f} ms"


# ------------------------------------------------------------------------------- selection


@dataclass
class Block:
    """One (rank, device) drawn: its timeline, the events kept, and where its time 0 lands."""

    rank: RankTrace
    device_id: int
    tl: DeviceTimeline
    sel: np.ndarray        # mask over tl's events
    shift_us: float        # added to tl times (µs from the rank's origin) to get the figure's x
    prefix: str            # "" or "before · " / "after · "


def _step_range(steps) -> tuple[int, int] | None:
    if steps is None:
        return None
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        return int(steps), int(steps)
    try:
        a, b = steps
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"steps: expected None, N or (first, last), got {steps!r}") from None


def _rank_set(ranks) -> set[int] | None:
    if ranks is None:
        return None
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        return {int(ranks)}
    return {int(r) for r in ranks}


def select_blocks(ts: TraceSet, steps=None, ranks=None, prefix: str = "") -> list[Block]:
    """The (rank, device) blocks of ``ts`` with their selected events; x shared across ranks.

    Raises ``SpeedtraceError`` when asked for ranks or steps the trace set lacks."""
    want = _rank_set(ranks)
    chosen = [rt for rt in ts.ranks if want is None or rt.rank in want]
    if want is not None and not chosen:
        have = ", ".join(str(rt.rank) for rt in ts.ranks) or "none"
        raise SpeedtraceError(f"{ts.path}: no rank {', '.join(map(str, sorted(want)))} (ranks present: {have})")
    step_range = _step_range(steps)
    # One clock for all ranks: each rank's times are relative to its own first event.
    origin = min((rt.origin_ts_us for rt in chosen), default=0.0)
    blocks, have_steps = [], set()
    for rt in chosen:
        for device_id in rt.gpu_devices():
            tl = device_timeline(rt, device_id, ts.run)
            have_steps.update(tl.steps.steps)
            if step_range is None:
                sel = np.ones(len(tl.rows), dtype=bool)
            else:
                a, b = step_range
                sel = (tl.steps.step_of >= a) & (tl.steps.step_of <= b)
            blocks.append(Block(rt, device_id, tl, sel, rt.origin_ts_us - origin, prefix))
    if step_range is not None and blocks and not any(b.sel.any() for b in blocks):
        a, b = step_range
        what = f"step {a}" if a == b else f"steps {a}-{b}"
        present = (f"the trace has steps {min(have_steps)}-{max(have_steps)}" if have_steps
                   else "the trace has no profiler steps")
        raise SpeedtraceError(f"{ts.path}: no GPU activity in {what} ({present})")
    return blocks


# ------------------------------------------------------------------------------- geometry


class _Segments:
    """Horizontal segments (x0, x1, y) with one hover text each, grouped by a key; drawn as
    WebGL lines plus invisible midpoint markers that carry the hover."""

    def __init__(self):
        self.parts: dict[str, list] = {}

    def add(self, key: str, x0, x1, y, text) -> None:
        p = self.parts.setdefault(key, [[], [], [], []])
        p[0].append(np.asarray(x0, float))
        p[1].append(np.asarray(x1, float))
        p[2].append(np.broadcast_to(np.asarray(y, float), np.shape(x0)).astype(float))
        p[3].extend(text)

    def arrays(self, key: str):
        p = self.parts.get(key)
        if not p:
            return None
        return np.concatenate(p[0]), np.concatenate(p[1]), np.concatenate(p[2]), p[3]


def _segment_traces(go, x0, x1, y, *, name, color, width, legendgroup, showlegend=True, text=None,
                    hovertext=None, customdata=None, hovertemplate="%{text}<extra></extra>"):
    """Line traces (≤ MAX_POINTS points each) and the invisible midpoint markers that carry
    their hover (per point ``text``, ``hovertext`` and ``customdata`` rows)."""
    traces = []
    n = len(x0)
    per = MAX_POINTS // 3
    for lo in range(0, n, per):
        hi = min(n, lo + per)
        xs = np.empty(3 * (hi - lo))
        ys = np.empty(3 * (hi - lo), dtype=np.float32)
        xs[0::3], xs[1::3], xs[2::3] = x0[lo:hi], x1[lo:hi], np.nan
        ys[0::3], ys[1::3], ys[2::3] = y[lo:hi], y[lo:hi], np.nan
        traces.append(go.Scattergl(
            x=xs, y=ys, mode="lines", line=dict(color=color, width=width), name=name,
            legendgroup=legendgroup, showlegend=showlegend and lo == 0, hoverinfo="skip",
            connectgaps=False))
    for lo in range(0, n, MAX_POINTS):
        hi = min(n, lo + MAX_POINTS)
        extra = {}
        if text is not None:
            extra["text"] = text[lo:hi]
        if hovertext is not None:
            extra["hovertext"] = hovertext[lo:hi]
        if customdata is not None:
            extra["customdata"] = customdata[lo:hi]
        traces.append(go.Scattergl(
            x=(x0[lo:hi] + x1[lo:hi]) / 2, y=np.asarray(y[lo:hi], np.float32), mode="markers",
            marker=dict(color=color, size=width, opacity=0), name=name, legendgroup=legendgroup,
            showlegend=False, hovertemplate=hovertemplate, **extra))
    return traces


def _rect_polygons(x0, x1, y0, y1) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles as one NaN-separated polygon list (5 corners + a NaN each)."""
    n = len(x0)
    xs = np.empty(6 * n)
    ys = np.empty(6 * n, dtype=np.float32)
    y0 = np.broadcast_to(np.asarray(y0, float), (n,))
    y1 = np.broadcast_to(np.asarray(y1, float), (n,))
    for k, (xv, yv) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))):
        xs[k::6], ys[k::6] = xv, yv
    xs[5::6] = ys[5::6] = np.nan
    return xs, ys


def _polygon_traces(go, xs, ys, *, name, color, legendgroup, showlegend=True, customdata=None,
                    hovertemplate=None, yaxis="y", line_shape="linear"):
    """Filled polygons (NaN-separated), cut into traces of ≤ MAX_POINTS at polygon ends."""
    traces = []
    n = len(xs)
    lo = 0
    while lo < n:
        hi = min(n, lo + MAX_POINTS)
        if hi < n:  # end the chunk just after a NaN so no polygon is cut
            nan_at = np.flatnonzero(np.isnan(xs[lo:hi]))
            if len(nan_at):
                hi = lo + int(nan_at[-1]) + 1
        hover = dict(hoverinfo="skip") if hovertemplate is None else dict(
            customdata=None if customdata is None else customdata[lo:hi], hovertemplate=hovertemplate)
        traces.append(go.Scattergl(
            x=xs[lo:hi], y=ys[lo:hi], mode="lines", fill="toself", fillcolor=color,
            line=dict(width=0, color=color, shape=line_shape), name=name, legendgroup=legendgroup,
            showlegend=showlegend and lo == 0, yaxis=yaxis, **hover))
        lo = hi
    return traces


def _pack(starts: np.ndarray, ends: np.ndarray, levels: int) -> np.ndarray:
    """Greedy interval packing: a level per interval so that none overlaps on one level
    (intervals sorted by start); past ``levels`` they share the last one."""
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


def phase_color(name: str) -> str:
    """A stable colour per phase: the trainer's phases by their last path part, others hashed."""
    leaf = name.rsplit("/", 1)[-1] if name.startswith("optimizer") else name
    if leaf in PHASE_COLORS:
        return PHASE_COLORS[leaf]
    if name.startswith("optimizer"):
        return PHASE_COLORS["optimizer"]
    h = sum((i + 1) * ord(c) for i, c in enumerate(name[:64]))
    return OTHER_PHASE_COLORS[h % len(OTHER_PHASE_COLORS)]


# ------------------------------------------------------------------------------- per block data


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


def exposed_memory(tl: DeviceTimeline, sel: np.ndarray, min_gap_us: float) -> list[dict]:
    """Maximal intervals of ∪memory \\ (∪compute ∪ ∪comm) of at least ``min_gap_us``, attributed
    through the memory event that covers their start (its step, phase, CPU op and cause)."""
    idx = np.flatnonzero(sel)
    mem, kern = idx[tl.is_memory[idx]], idx[tl.is_kernel[idx]]
    u = iv.subtract(iv.union(tl.start[mem], tl.end[mem]), iv.union(tl.start[kern], tl.end[kern]))
    keep = (u[1] - u[0]) >= min_gap_us
    gs, ge = u[0][keep], u[1][keep]
    if len(gs) == 0:
        return []
    owner = _covering(tl.start, tl.end, mem, gs)
    attrs = _attribute(tl, owner, gs, ge)
    return [{"kind": "exposed_memory", "start_us": float(s), "dur_us": float(e - s),
             "event": tl.name(int(o)) if o >= 0 else None, **a}
            for s, e, o, a in zip(gs, ge, owner, attrs)]


def event_hover(tl: DeviceTimeline, idx: np.ndarray, starts: dict[int, float], origin: float):
    """Hover fields of events: (names, context, numbers, template lines).

    Per event: its escaped name (``text``); "step N · CPU op · phase" (``hovertext``); and
    numbers as float32 rows (``customdata``: start in its step, or from ``origin`` outside the
    steps; duration; grid blocks; threads per block; blocks/SM; occupancy %). The template
    lines name only the numbers some event of ``idx`` has, so a memcpy shows no grid."""
    ev = tl.rank.events
    rows = tl.rows[idx]
    labels: dict[int, str] = {}

    def label(code: int) -> str:
        s = labels.get(code)
        if s is None:
            s = labels[code] = _label(ev.names[code], NAME_LIMIT)
        return s

    def row_label(row: int) -> str:
        return "—" if row < 0 else label(int(ev.name[row]))

    step = tl.steps.step_of[idx]
    start = tl.start[idx]
    step_t0 = np.array([starts.get(int(n), origin) for n in step]) if len(idx) else np.empty(0)
    in_step = np.array([int(n) in starts for n in step], dtype=bool)
    grid = ev.grid_blocks[rows].astype(np.float64)
    block = ev.block_threads[rows].astype(np.float64)
    grid[grid <= 0] = np.nan
    block[block <= 0] = np.nan
    occ, b = ev.occupancy_pct[rows], tl.b[idx]
    # Rounded, so that each row is short in the figure's JSON (a 2-D array is written as text).
    numbers = [[_num(v, d) for v, d in zip(row, (1, 3, 0, 0, 3, 1))]
               for row in zip(start - step_t0, tl.end[idx] - start, grid, block, b, occ)]
    names = [label(int(c)) for c in ev.name[rows]]
    op, phase = tl.cpu_op[idx], tl.phase[idx]
    # ASCII separators: the figure JSON writes any other character as a 6-byte escape.
    context = [f"{'step ' + str(int(n)) if ok else 'the trace'}; CPU op {row_label(int(o))}; "
               f"phase {row_label(int(p))}" for n, ok, o, p in zip(step, in_step, op, phase)]
    lines = ["%{customdata[1]:,.2f} µs, starting +%{customdata[0]:,.1f} µs into %{hovertext}"]
    shape = []
    if not np.isnan(grid).all():
        shape.append("grid %{customdata[2]:,.0f} × %{customdata[3]:.0f} threads")
    if not np.isnan(b).all():
        shape.append("%{customdata[4]:.2f} blocks/SM")
    if not np.isnan(occ).all():
        shape.append("occupancy %{customdata[5]:.0f}%")
    if shape:
        lines.append(" · ".join(shape))
    return names, context, numbers, lines


def _gap_text(g: dict, who: str) -> str:
    where = f"step {g['step']}" if g.get("step") is not None else "outside the steps"
    lines = [f"<b>{GAP_NAMES[g['kind']]}</b> {_us(g['dur_us'])}", f"{who} · {where}",
             f"cause: {esc(g.get('cause'))}", f"phase: {_label(g.get('phase') or '—')}",
             f"CPU op: {_label(g.get('cpu_op') or '—')}"]
    if g["kind"] == "idle":
        lines.append(f"after: {_label(g.get('prev_event') or '—')}")
        lines.append(f"before: {_label(g.get('next_event') or '—')}")
    elif g["kind"] == "exposed_comm":
        comm = g.get("comm_kernels") or []
        lines.append("comm: " + ", ".join(_label(c) for c in comm[:3]) + (" …" if len(comm) > 3 else ""))
        lines.append(f"next compute: {_label(g.get('next_compute') or '—')}")
    else:
        lines.append(f"memory event: {_label(g.get('event') or '—')}")
    return "<br>".join(lines)


def phase_instances(tl: DeviceTimeline, sel: np.ndarray) -> list[tuple[str, float, float, int]]:
    """(name, first start, last end, events) per annotation instance that launched selected
    GPU work: the phase as the GPU ran it, not as the host issued it."""
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
    """Σ blocks/SM of the selected running compute kernels with known b, as (x, values)."""
    m = sel & tl.is_compute & ~np.isnan(tl.b)
    return iv.step_function(tl.start[m], tl.end[m], tl.b[m])


def contention(tl: DeviceTimeline, sel: np.ndarray) -> tuple[iv.Union, iv.Union]:
    """(comm running, comm queued) while compute claims every SM, as metrics.md's
    ``sm_contention_us`` and ``comm_queue_full_sm_us`` measure them."""
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


def _polygon_of_steps(x: np.ndarray, f: np.ndarray, base: float, scale: float, piece: int = 4000):
    """The area under a step function, for a ``line_shape="hv"`` filled trace: NaN-separated
    polygons of at most ``piece`` steps, and each vertex's unclipped value (for the hover)."""
    if len(f) == 0:
        return np.empty(0), np.empty(0, np.float32), np.empty(0)
    keep = np.ones(len(f), dtype=bool)
    keep[1:] = f[1:] != f[:-1]  # merge equal neighbours
    xk = np.append(x[:-1][keep], x[-1])
    fk = f[keep]
    xs_parts, ys_parts, cd_parts = [], [], []
    for lo in range(0, len(fk), piece):
        hi = min(len(fk), lo + piece)
        v = fk[lo:hi]
        h = base + np.minimum(np.maximum(v, 0.0), SM_CLIP) * scale
        # (x0, base) up to h0, along each step, down at the last right edge, back along the base.
        xs_parts.append(np.concatenate([[xk[lo]], xk[lo:hi], [xk[hi], xk[lo], np.nan]]))
        ys_parts.append(np.concatenate([[base], h, [base, base, np.nan]]))
        cd_parts.append(np.concatenate([[v[0]], v, [0.0, 0.0, np.nan]]))
    # customdata is written as JSON text: rounded, it stays short.
    return (np.concatenate(xs_parts), np.concatenate(ys_parts).astype(np.float32),
            np.round(np.concatenate(cd_parts), 2))


# ------------------------------------------------------------------------------- figure


def who(block: Block) -> str:
    """'rank 0 · GPU 0' (with the side's prefix in a before/after figure)."""
    return f"{block.prefix}rank {block.rank.rank} · GPU {block.device_id}"


def build_figure(blocks: list[Block], *, title: str, min_gap_us: float = MIN_GAP_US,
                 x_title: str = "time (ms)"):
    """The timeline figure of ``blocks`` (see the module docstring)."""
    import plotly.graph_objects as go

    seg = _Segments()
    traces: list = []
    kernel_traces: list = []
    shown: set[str] = set()
    tickvals, ticktext = [], []
    shapes, annotations = [], []
    bands: dict[str, list[tuple]] = {k: [] for k in GAP_COLORS}
    sm_ticks, sm_text = [], []
    events_drawn = 0
    y = 0.0
    n_blocks = len(blocks)
    sm_gap = 1.35
    first_block_top = None
    for bi, blk in enumerate(blocks):
        tl, sel = blk.tl, blk.sel
        tag = who(blk)

        def x_of(t, shift=blk.shift_us):
            return (np.asarray(t, float) + shift) / 1000.0
        starts = step_starts(tl, sel)
        origin = float(tl.start[sel].min()) if sel.any() else 0.0
        block_top = y - 0.5
        if first_block_top is None:
            first_block_top = block_top

        # Phase band: one row per packing level.
        inst = phase_instances(tl, sel)
        if inst:
            s = np.array([r[1] for r in inst])
            e = np.array([r[2] for r in inst])
            level = _pack(s, e, MAX_PHASE_ROWS)
            levels = int(level.max()) + 1
            for k in range(levels):
                tickvals.append(y + k)
                ticktext.append(f"{esc(tag)} · phases" if k == 0 else "")
            by_name: dict[str, list[int]] = {}
            for i, r in enumerate(inst):
                by_name.setdefault(r[0], []).append(i)
            for name, ids in by_name.items():
                ids = np.array(ids)
                txt = [f"<b>{_label(name)}</b><br>{esc(tag)} · {_us(e[i] - s[i])} on the GPU, "
                       f"{inst[i][3]:,} events" for i in ids]
                seg.add(name, x_of(s[ids]), x_of(e[ids]), y + level[ids], txt)
            y += levels

        # Stream lanes.
        streams = stream_of(tl)
        lanes_top = y
        for sid in sorted({int(v) for v in np.unique(streams[sel])}):
            m = sel & (streams == sid)
            tickvals.append(y)
            ticktext.append(f"{esc(tag)} · stream {sid} ({stream_kind(tl, m)})")
            lane = f"{esc(tag)} · stream {sid}"
            for cls, cmask in (("compute", tl.is_compute), ("comm", tl.is_comm), ("memory", tl.is_memory)):
                idx = np.flatnonzero(m & cmask)
                if not len(idx):
                    continue
                names, context, numbers, lines = event_hover(tl, idx, starts, origin)
                template = "<br>".join([f"<b>%{{text}}</b> ({cls})", lane] + lines) + "<extra></extra>"
                kernel_traces += _segment_traces(
                    go, x_of(tl.start[idx]), x_of(tl.end[idx]), np.full(len(idx), y), name=CLASS_NAMES[cls],
                    color=CLASS_COLORS[cls], width=LINE_PX, legendgroup="class:" + cls,
                    showlegend=cls not in shown, text=names, hovertext=context, customdata=numbers,
                    hovertemplate=template)
                shown.add(cls)
                events_drawn += len(idx)
            y += 1
        lanes_bottom = y - 1

        # Gap bands across the stream lanes, with a hover marker in the middle of each.
        if sel.any():
            found, _ = gap_table(tl, sel, min_gap_us=min_gap_us)
            for g in found + exposed_memory(tl, sel, min_gap_us):
                gs = float(x_of(g["start_us"]))
                bands[g["kind"]].append((gs, float(x_of(g["start_us"] + g["dur_us"])), lanes_top - 0.5,
                                         lanes_bottom + 0.5, _gap_text(g, tag)))

        # Step boundaries over this block's rows.
        for n, t in starts.items():
            shapes.append(dict(type="line", xref="x", yref="y", x0=float(x_of(t)), x1=float(x_of(t)),
                               y0=block_top, y1=y - 0.5, line=dict(color="#333", width=1, dash="dot")))
            if bi == 0:
                annotations.append(dict(x=float(x_of(t)), y=block_top, xref="x", yref="y", text=f"step {n}",
                                        showarrow=False, yanchor="bottom", xanchor="left",
                                        font=dict(size=11, color="#333")))

        # SM-usage track (second y axis; block 0 at the top).
        base = (n_blocks - 1 - bi) * sm_gap
        x, f = sm_usage(tl, sel)
        xs, ys, cd = _polygon_of_steps(x, f, base, 1.0 / SM_CLIP)
        if len(xs):
            traces += _polygon_traces(
                go, x_of(xs), ys, name="SM usage (Σ blocks/SM)", color="rgba(76,120,168,0.55)",
                legendgroup="sm", showlegend=bi == 0, customdata=cd, yaxis="y2", line_shape="hv",
                hovertemplate=f"{esc(tag)}<br>Σ blocks/SM of running compute kernels: %{{customdata:.2f}}"
                              "<extra></extra>")
        running, queued = contention(tl, sel)
        for u, color, what, group in ((running, CONTENTION_COLOR, "comm ran", "contention"),
                                      (queued, QUEUE_COLOR, "comm waited in its queue", "queue")):
            if len(u[0]):
                px, py = _rect_polygons(x_of(u[0]), x_of(u[1]), base, base + 1.0)
                cd = np.round(np.repeat(u[1] - u[0], 6), 1)
                traces += _polygon_traces(
                    go, px, py, name=f"{what} while compute held every SM", color=color,
                    legendgroup=group, showlegend=group not in shown, customdata=cd, yaxis="y2",
                    hovertemplate=f"{esc(tag)}<br>{what} while compute held every SM: "
                                  "%{customdata:.1f} µs<extra></extra>")
                shown.add(group)
        one = base + 1.0 / SM_CLIP
        lo_x = float(x_of(tl.start[sel].min())) if sel.any() else 0.0
        hi_x = float(x_of(tl.end[sel].max())) if sel.any() else 0.0
        shapes.append(dict(type="line", xref="x", yref="y2", x0=lo_x, x1=hi_x, y0=one, y1=one,
                           line=dict(color="#b22", width=1, dash="dash")))
        sm_ticks += [base, one]
        sm_text += [f"{esc(tag)}  0", "Σb = 1"]
        y += 0.6  # a little air between blocks

    # Gap bands (drawn first, under the kernels).
    band_traces = []
    for kind, rows in bands.items():
        if not rows:
            continue
        x0, x1, y0, y1 = (np.array([r[k] for r in rows]) for k in range(4))
        texts = [r[4] for r in rows]
        px, py = _rect_polygons(x0, x1, y0, y1)
        band_traces += _polygon_traces(go, px, py, name=GAP_NAMES[kind], color=GAP_COLORS[kind],
                                       legendgroup="gap:" + kind)
        band_traces.append(go.Scattergl(
            x=(x0 + x1) / 2, y=(y0 + y1) / 2, mode="markers", name=GAP_NAMES[kind],
            legendgroup="gap:" + kind, showlegend=False,
            marker=dict(symbol="diamond", size=6, color=GAP_MARKERS[kind], opacity=0.6),
            text=texts, hovertemplate="%{text}<extra></extra>"))

    phase_traces = []
    for key in seg.parts:
        x0, x1, yy, text = seg.arrays(key)
        phase_traces += _segment_traces(go, x0, x1, yy, name=_label(key), color=phase_color(key),
                                        width=LINE_PX, legendgroup="phase:" + key, showlegend=False, text=text)

    rows_h = max(y, 1.0)
    lanes_px = int(rows_h * ROW_PX)
    sm_px = SM_ROW_PX * max(n_blocks, 1)
    height = lanes_px + sm_px + 170
    sm_frac = sm_px / (lanes_px + sm_px)
    fig = go.Figure(band_traces + phase_traces + kernel_traces + traces)
    if not events_drawn:
        annotations.append(dict(text="no GPU activity in the selection", xref="paper", yref="paper",
                                x=0.5, y=0.5, showarrow=False, font=dict(size=16)))
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", y=1.0, yref="container", yanchor="top",
                   pad=dict(t=8), font=dict(size=15)),
        height=height + 50, margin=dict(l=10, r=10, t=110, b=40),
        hovermode="closest", dragmode="zoom", plot_bgcolor="#fafafa",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, yref="paper", x=0.0, xanchor="left",
                    font=dict(size=11), entrywidth=0, borderwidth=0),
        xaxis=dict(title=x_title, anchor="y2", rangeslider=dict(visible=True, thickness=0.05),
                   showspikes=True, spikemode="across", spikethickness=1),
        yaxis=dict(domain=[sm_frac + 0.02, 1.0], range=[y - 0.4, first_block_top or -0.5] if events_drawn else None,
                   tickvals=tickvals, ticktext=ticktext, fixedrange=True, showgrid=False, zeroline=False,
                   automargin=True, tickfont=dict(size=10)),
        yaxis2=dict(domain=[0.0, sm_frac], range=[-0.15, (n_blocks - 1) * sm_gap + 1.15], fixedrange=True,
                    tickvals=sm_ticks, ticktext=sm_text, showgrid=False, zeroline=False, automargin=True,
                    tickfont=dict(size=10)),
        shapes=shapes, annotations=annotations,
        meta={"events_drawn": events_drawn},
    )
    return fig


def timeline_title(ts: TraceSet, steps=None) -> str:
    rng = _step_range(steps)
    what = "" if rng is None else (f", step {rng[0]}" if rng[0] == rng[1] else f", steps {rng[0]}-{rng[1]}")
    return f"GPU timeline: {_label(ts.path)}{what}"


def timeline(ts: TraceSet, steps=None, ranks=None, *, min_gap_us: float = MIN_GAP_US):
    """The GPU timeline of a loaded trace set (see the module docstring).

    ``steps``: None (all), N, or (first, last) inclusive; ``ranks``: None (all), R or a list.
    Raises ``SpeedtraceError`` for ranks or steps the trace set lacks."""
    return build_figure(select_blocks(ts, steps, ranks), title=timeline_title(ts, steps),
                        min_gap_us=min_gap_us, x_title="time since the first event (ms)")


def _steps_of(ts: TraceSet) -> list[int]:
    out: set[int] = set()
    for rt in ts.ranks:
        for d in rt.gpu_devices():
            out.update(device_timeline(rt, d, ts.run).steps.steps)
    return sorted(out)


def _pair_steps(a: TraceSet, b: TraceSet, step) -> tuple[int | None, int | None]:
    """The step drawn on each side: ``step`` on both; by default the middle one of the steps
    both sides have (the first steps carry warm-up), else each side's own middle step."""
    if step is not None:
        return step, step
    sa, sb = _steps_of(a), _steps_of(b)
    common = sorted(set(sa) & set(sb))
    if common:
        n = common[len(common) // 2]
        return n, n
    return (sa[len(sa) // 2] if sa else None), (sb[len(sb) // 2] if sb else None)


def timeline_pair(before_ts: TraceSet, after_ts: TraceSet, step=None, *, ranks=None,
                  min_gap_us: float = MIN_GAP_US):
    """Two timelines of one step, before above after, both starting at 0 at the step's first
    GPU event. ``step`` defaults to the middle one of the steps both sides have, else to each
    side's own middle step; a side without steps is drawn whole."""
    picked = _pair_steps(before_ts, after_ts, step)
    blocks = []
    for ts, prefix, n in ((before_ts, "before · ", picked[0]), (after_ts, "after · ", picked[1])):
        side = select_blocks(ts, n, ranks, prefix)
        for blk in side:
            t0 = blk.tl.start[blk.sel].min() if blk.sel.any() else 0.0
            blk.shift_us = -float(t0)
        blocks += side

    def name(n):
        return f"step {n}" if n is not None else "the whole trace"
    what = name(picked[0]) if picked[0] == picked[1] else f"{name(picked[0])} / {name(picked[1])}"
    title = f"before vs after, {what}: {_label(before_ts.path)} → {_label(after_ts.path)}"
    return build_figure(blocks, title=title, min_gap_us=min_gap_us,
                        x_title=f"time since the first GPU event of {what} (ms)")
