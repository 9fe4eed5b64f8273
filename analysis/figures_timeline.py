"""The step timeline: GPU lanes per rank and stream, gap bands, phases and SM usage, in plotly.

Layout, top to bottom for each (rank, device): a phase band (the annotations around the
launches), one lane per stream, the idle / exposed-comm / exposed-memory gaps shaded across
those lanes; under all of them, on a second y axis, one SM-usage track per (rank, device).

Scale: a training step has tens of thousands of kernels, and plotly's SVG bars (or layout
shapes) become unusable past about ten thousand. Kernels are therefore drawn as WebGL line
segments, one trace per lane and class (``figures_geometry``), with the hover on an invisible
marker at each kernel's midpoint; bands and the SM track are WebGL polygons. Layout shapes are
used only for the few step boundaries and the SM tracks' 1.0 lines. What is drawn beside the
kernels comes from ``tracks`` (shared with the Perfetto export).

Every name from the trace goes through ``_label`` (bidi and control characters made visible,
then HTML-escaped): plotly renders a small HTML subset in hover text and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedtrace.analysis import tracks
from speedtrace.analysis.events import RankTrace, TraceSet
from speedtrace.analysis.figures_geometry import polygon_traces, rect_polygons, segment_traces, step_area
from speedtrace.analysis.gaps import gap_table
from speedtrace.analysis.html_page import esc
from speedtrace.analysis.sections import safe_text
from speedtrace.analysis.timeline import DeviceTimeline, device_timeline
from speedtrace.errors import SpeedtraceError

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


def phase_color(name: str) -> str:
    """A stable colour per phase: the trainer's phases by their last path part, others hashed."""
    leaf = name.rsplit("/", 1)[-1] if name.startswith("optimizer") else name
    if leaf in PHASE_COLORS:
        return PHASE_COLORS[leaf]
    if name.startswith("optimizer"):
        return PHASE_COLORS["optimizer"]
    h = sum((i + 1) * ord(c) for i, c in enumerate(name[:64]))
    return OTHER_PHASE_COLORS[h % len(OTHER_PHASE_COLORS)]


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


def gap_text(g: dict, who: str) -> str:
    """Hover text of a gap: kind, length, where, cause, phase, CPU op and its neighbours."""
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


# ------------------------------------------------------------------------------- figure


def who(block: Block) -> str:
    """'rank 0 · GPU 0' (with the side's prefix in a before/after figure)."""
    return f"{block.prefix}rank {block.rank.rank} · GPU {block.device_id}"


class _Canvas:
    """The figure under construction: traces by layer, the lanes' y ticks, shapes, legend state.

    Lanes run down the first y axis (row 0 at the top, one unit a row); the SM tracks sit on the
    second y axis, one band of height 1 per (rank, device) from ``SM_BAND`` apart."""

    SM_BAND = 1.35

    def __init__(self, n_blocks: int, min_gap_us: float):
        self.n_blocks, self.min_gap_us = n_blocks, min_gap_us
        self.bands, self.phases, self.kernels, self.sm = [], [], [], []
        self.gaps: dict[str, list[tuple]] = {k: [] for k in GAP_COLORS}
        self.phase_rows: dict[str, list] = {}
        self.ticks, self.labels, self.sm_ticks, self.sm_labels = [], [], [], []
        self.shapes, self.annotations = [], []
        self.shown: set[str] = set()
        self.events_drawn = 0
        self.y = 0.0
        self.x_range = [np.inf, -np.inf]  # first start and last end drawn (ms)

    def legend_once(self, group: str) -> bool:
        first = group not in self.shown
        self.shown.add(group)
        return first

    def block(self, bi: int, blk: Block) -> None:
        tl, sel = blk.tl, blk.sel
        tag = esc(who(blk))

        def x_of(t):
            return (np.asarray(t, float) + blk.shift_us) / 1000.0

        starts = tracks.step_starts(tl, sel)
        if sel.any():
            self.x_range[0] = min(self.x_range[0], float(x_of(tl.start[sel].min())))
            self.x_range[1] = max(self.x_range[1], float(x_of(tl.end[sel].max())))
        top = self.y - 0.5
        self._phase_rows(tl, sel, tag, x_of)
        lanes_top = self.y
        self._stream_lanes(tl, sel, tag, x_of, starts)
        self._gap_bands(tl, sel, tag, x_of, lanes_top, self.y - 1)
        for n, t in starts.items():  # step boundaries over this block's rows
            x = float(x_of(t))
            self.shapes.append(dict(type="line", xref="x", yref="y", x0=x, x1=x, y0=top, y1=self.y - 0.5,
                                    line=dict(color="#333", width=1, dash="dot")))
            if bi == 0:
                self.annotations.append(dict(x=x, y=top, xref="x", yref="y", text=f"step {n}", showarrow=False,
                                             yanchor="bottom", xanchor="left", font=dict(size=11, color="#333")))
        self._sm_track(tl, sel, tag, x_of, (self.n_blocks - 1 - bi) * self.SM_BAND)
        self.y += 0.6  # air between blocks

    def _phase_rows(self, tl, sel, tag, x_of) -> None:
        """The phase band: annotation instances as the GPU ran them, overlapping ones on sub-rows."""
        inst = tracks.phase_instances(tl, sel)
        if not inst:
            return
        s = np.array([r[1] for r in inst])
        e = np.array([r[2] for r in inst])
        level = tracks.pack(s, e, MAX_PHASE_ROWS)
        for k in range(int(level.max()) + 1):
            self.ticks.append(self.y + k)
            self.labels.append(f"{tag} · phases" if k == 0 else "")
        for i, (name, _, _, n) in enumerate(inst):
            rows = self.phase_rows.setdefault(name, [[], [], [], []])
            rows[0].append(float(x_of(s[i])))
            rows[1].append(float(x_of(e[i])))
            rows[2].append(self.y + level[i])
            rows[3].append(f"<b>{_label(name)}</b><br>{tag} · {_us(e[i] - s[i])} on the GPU, {n:,} events")
        self.y += int(level.max()) + 1

    def _stream_lanes(self, tl, sel, tag, x_of, starts) -> None:
        """One lane per stream; a trace per (lane, class) with its hover template."""
        streams = tracks.stream_of(tl)
        origin = float(tl.start[sel].min()) if sel.any() else 0.0
        for sid in sorted({int(v) for v in np.unique(streams[sel])}):
            m = sel & (streams == sid)
            self.ticks.append(self.y)
            self.labels.append(f"{tag} · stream {sid} ({tracks.stream_kind(tl, m)})")
            for cls, cmask in (("compute", tl.is_compute), ("comm", tl.is_comm), ("memory", tl.is_memory)):
                idx = np.flatnonzero(m & cmask)
                if not len(idx):
                    continue
                names, context, numbers, lines = event_hover(tl, idx, starts, origin)
                template = "<br>".join([f"<b>%{{text}}</b> ({cls})", f"{tag} · stream {sid}"] + lines)
                self.kernels += segment_traces(
                    _go(), x_of(tl.start[idx]), x_of(tl.end[idx]), np.full(len(idx), self.y),
                    name=CLASS_NAMES[cls], color=CLASS_COLORS[cls], width=LINE_PX, legendgroup="class:" + cls,
                    showlegend=self.legend_once("class:" + cls), text=names, hovertext=context,
                    customdata=numbers, hovertemplate=template + "<extra></extra>")
                self.events_drawn += len(idx)
            self.y += 1

    def _gap_bands(self, tl, sel, tag, x_of, first_lane: float, last_lane: float) -> None:
        if not sel.any():
            return
        found, _ = gap_table(tl, sel, min_gap_us=self.min_gap_us)
        for g in found + tracks.exposed_memory(tl, sel, self.min_gap_us):
            self.gaps[g["kind"]].append((float(x_of(g["start_us"])), float(x_of(g["start_us"] + g["dur_us"])),
                                         first_lane - 0.5, last_lane + 0.5, gap_text(g, tag)))

    def _sm_track(self, tl, sel, tag, x_of, base: float) -> None:
        """Σ blocks/SM (clipped at SM_CLIP, the true value in the hover), its 1.0 line, and the
        times comm ran or waited while compute held every SM."""
        go = _go()
        x, f = tracks.sm_usage(tl, sel)
        xs, ys, values = step_area(x, f, base, 1.0 / SM_CLIP, SM_CLIP)
        if len(xs):
            self.sm += polygon_traces(
                go, x_of(xs), ys, name="SM usage (Σ blocks/SM)", color="rgba(76,120,168,0.55)", legendgroup="sm",
                showlegend=self.legend_once("sm"), customdata=values, yaxis="y2", line_shape="hv",
                hovertemplate=f"{tag}<br>Σ blocks/SM of running compute kernels: %{{customdata:.2f}}<extra></extra>")
        running, queued = tracks.contention(tl, sel)
        for u, color, what, group in ((running, CONTENTION_COLOR, "comm ran", "contention"),
                                      (queued, QUEUE_COLOR, "comm waited in its queue", "queue")):
            if len(u[0]):
                px, py = rect_polygons(x_of(u[0]), x_of(u[1]), base, base + 1.0)
                self.sm += polygon_traces(
                    go, px, py, name=f"{what} while compute held every SM", color=color, legendgroup=group,
                    showlegend=self.legend_once(group), customdata=np.round(np.repeat(u[1] - u[0], 6), 1),
                    yaxis="y2", hovertemplate=f"{tag}<br>{what} while compute held every SM: "
                                              "%{customdata:.1f} µs<extra></extra>")
        one = base + 1.0 / SM_CLIP
        lo, hi = (float(x_of(tl.start[sel].min())), float(x_of(tl.end[sel].max()))) if sel.any() else (0.0, 0.0)
        self.shapes.append(dict(type="line", xref="x", yref="y2", x0=lo, x1=hi, y0=one, y1=one,
                                line=dict(color="#b22", width=1, dash="dash")))
        self.sm_ticks += [base, one]
        self.sm_labels += [f"{tag}  0", "Σb = 1"]

    def _band_traces(self) -> list:
        """Gap bands across each block's lanes, with a diamond in the middle carrying the hover."""
        go = _go()
        out = []
        for kind, rows in self.gaps.items():
            if not rows:
                continue
            x0, x1, y0, y1 = (np.array([r[k] for r in rows]) for k in range(4))
            px, py = rect_polygons(x0, x1, y0, y1)
            out += polygon_traces(go, px, py, name=GAP_NAMES[kind], color=GAP_COLORS[kind], legendgroup="gap:" + kind)
            out.append(go.Scattergl(
                x=(x0 + x1) / 2, y=((y0 + y1) / 2).astype(np.float32), mode="markers", name=GAP_NAMES[kind],
                legendgroup="gap:" + kind, showlegend=False,
                marker=dict(symbol="diamond", size=6, color=GAP_MARKERS[kind], opacity=0.6),
                text=[r[4] for r in rows], hovertemplate="%{text}<extra></extra>"))
        return out

    def _phase_traces(self) -> list:
        out = []
        for name, (x0, x1, y, text) in self.phase_rows.items():
            out += segment_traces(_go(), np.array(x0), np.array(x1), np.array(y), name=_label(name),
                                  color=phase_color(name), width=LINE_PX, legendgroup="phase:" + name,
                                  showlegend=False, text=text)
        return out

    def figure(self, title: str, x_title: str):
        go = _go()
        lanes_px = int(max(self.y, 1.0) * ROW_PX)
        sm_px = SM_ROW_PX * max(self.n_blocks, 1)
        sm_frac = sm_px / (lanes_px + sm_px)
        # Bands first, so that kernels draw over them.
        fig = go.Figure(self._band_traces() + self._phase_traces() + self.kernels + self.sm)
        annotations = list(self.annotations)
        if not self.events_drawn:
            annotations.append(dict(text="no GPU activity in the selection", xref="paper", yref="paper",
                                    x=0.5, y=0.5, showarrow=False, font=dict(size=16)))
        height = lanes_px + sm_px + 230
        fig.update_layout(
            title=dict(text=title, x=0.01, xanchor="left", y=1.0, yref="container", yanchor="top",
                       pad=dict(t=8), font=dict(size=15)),
            height=height, margin=dict(l=10, r=10, t=125, b=40),
            hovermode="closest", dragmode="zoom", plot_bgcolor="#fafafa",
            # Under the title, in pixels from the top, above the step labels.
            legend=dict(orientation="h", yref="container", y=1.0 - 38.0 / height, yanchor="top", x=0.0,
                        xanchor="left", font=dict(size=11)),
            xaxis=dict(title=x_title, anchor="y2", rangeslider=dict(visible=True, thickness=0.05),
                       # The events' own extent: autorange would pad it for the hover markers.
                       range=self.x_range if self.events_drawn else None,
                       showspikes=True, spikemode="across", spikethickness=1),
            # Lanes top-down: the range runs from the last row up to the first.
            yaxis=dict(domain=[sm_frac + 0.02, 1.0], range=[self.y - 0.4, -0.5], tickvals=self.ticks,
                       ticktext=self.labels, fixedrange=True, showgrid=False, zeroline=False, automargin=True,
                       tickfont=dict(size=10)),
            yaxis2=dict(domain=[0.0, sm_frac], range=[-0.15, (self.n_blocks - 1) * self.SM_BAND + 1.15],
                        fixedrange=True, tickvals=self.sm_ticks, ticktext=self.sm_labels, showgrid=False,
                        zeroline=False, automargin=True, tickfont=dict(size=10)),
            shapes=self.shapes, annotations=annotations, meta={"events_drawn": self.events_drawn})
        return fig


def _go():
    import plotly.graph_objects as go

    return go


def build_figure(blocks: list[Block], *, title: str, min_gap_us: float = MIN_GAP_US,
                 x_title: str = "time (ms)"):
    """The timeline figure of ``blocks`` (see the module docstring)."""
    canvas = _Canvas(len(blocks), min_gap_us)
    for bi, blk in enumerate(blocks):
        canvas.block(bi, blk)
    return canvas.figure(title, x_title)


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
