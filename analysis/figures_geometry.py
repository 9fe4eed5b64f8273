"""WebGL geometry for the timeline: segments, rectangles and step areas as plotly Scattergl traces.

Plotly's SVG bars (one element per bar) and layout shapes stall past about ten thousand; a
Scattergl trace draws any number of NaN-separated segments or polygons in one WebGL call. Each
helper cuts its points into traces of at most ``MAX_POINTS``, at segment or polygon ends.
Arrays are typed (float64 x, float32 y) so plotly writes them as compact base64; ``customdata``
is written as JSON text, so callers round it.
"""

from __future__ import annotations

import numpy as np

# Points per trace: plotly's regl renderer slows down on very long single traces.
MAX_POINTS = 60_000


def segment_traces(go, x0, x1, y, *, name, color, width, legendgroup, showlegend=True, text=None,
                   hovertext=None, customdata=None, hovertemplate="%{text}<extra></extra>") -> list:
    """Horizontal segments [x0, x1) at height y, ``width`` px thick, as line traces; their hover
    is carried by invisible markers at the midpoints (one ``text``/``hovertext``/``customdata``
    entry per segment rather than per vertex)."""
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
            x=(np.asarray(x0[lo:hi]) + np.asarray(x1[lo:hi])) / 2, y=np.asarray(y[lo:hi], np.float32),
            mode="markers", marker=dict(color=color, size=width, opacity=0), name=name,
            legendgroup=legendgroup, showlegend=False, hovertemplate=hovertemplate, **extra))
    return traces


def rect_polygons(x0, x1, y0, y1) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles as NaN-separated polygons (5 corners and a NaN each)."""
    n = len(x0)
    xs = np.empty(6 * n)
    ys = np.empty(6 * n, dtype=np.float32)
    y0 = np.broadcast_to(np.asarray(y0, float), (n,))
    y1 = np.broadcast_to(np.asarray(y1, float), (n,))
    for k, (xv, yv) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))):
        xs[k::6], ys[k::6] = xv, yv
    xs[5::6] = ys[5::6] = np.nan
    return xs, ys


def step_area(x: np.ndarray, f: np.ndarray, base: float, scale: float, clip: float, piece: int = 4000):
    """The area under a step function (breakpoints ``x``, values ``f``) from ``base``, values
    clipped to ``clip`` and multiplied by ``scale``, for a ``line_shape="hv"`` filled trace:
    NaN-separated polygons of at most ``piece`` steps, and each vertex's unclipped value."""
    if len(f) == 0:
        return np.empty(0), np.empty(0, np.float32), np.empty(0)
    keep = np.ones(len(f), dtype=bool)
    keep[1:] = f[1:] != f[:-1]  # merge equal neighbours
    xk = np.append(x[:-1][keep], x[-1])
    fk = f[keep]
    xs, ys, values = [], [], []
    for lo in range(0, len(fk), piece):
        hi = min(len(fk), lo + piece)
        v = fk[lo:hi]
        h = base + np.minimum(np.maximum(v, 0.0), clip) * scale
        # (x0, base) up to h0, along each step, down at the last right edge, back along the base.
        xs.append(np.concatenate([[xk[lo]], xk[lo:hi], [xk[hi], xk[lo], np.nan]]))
        ys.append(np.concatenate([[base], h, [base, base, np.nan]]))
        values.append(np.concatenate([[v[0]], v, [0.0, 0.0, np.nan]]))
    return np.concatenate(xs), np.concatenate(ys).astype(np.float32), np.round(np.concatenate(values), 2)


def polygon_traces(go, xs, ys, *, name, color, legendgroup, showlegend=True, customdata=None,
                   hovertemplate=None, yaxis="y", line_shape="linear") -> list:
    """Filled NaN-separated polygons, cut into traces at polygon ends; no hover unless a
    ``hovertemplate`` is given (then on the vertices)."""
    traces = []
    n = len(xs)
    lo = 0
    while lo < n:
        hi = min(n, lo + MAX_POINTS)
        if hi < n:  # end the chunk just after a NaN so that no polygon is cut
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
