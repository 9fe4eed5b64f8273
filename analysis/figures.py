"""Plotly figures over the analysis results: the timeline, the summary panes and the diff.

Every function takes what the analysis already computed (a loaded ``TraceSet`` or a diff
document) and returns a ``plotly.graph_objects.Figure`` (``diff_figures``: a dict of them);
nothing here reads a file. plotly is imported on first use, so ``speedtrace.analysis`` stays
light. Names from traces are escaped in every text plotly draws (see ``figures_timeline``).

    ts = speedtrace.analysis.load("run/")
    figures.timeline(ts, steps=(11, 12), ranks=[0, 1])   # lanes per rank x stream, gaps, phases, SM
    figures.breakdown(ts)       # compute / exposed comm / exposed memory / idle per step and rank
    figures.overlap(ts)         # comm hidden under compute vs exposed, per rank
    figures.kernels(ts)         # top kernels by GPU time
    figures.gaps(ts)            # gaps over time, by cause
    figures.diff_figures(build_diff(before, after))    # {name: figure}
    figures.timeline_pair(before, after, step=None)    # one step of each side, aligned at 0
"""

from __future__ import annotations

from speedtrace.analysis.figures_diff import diff_figures
from speedtrace.analysis.figures_summary import breakdown, gaps, kernels, overlap
from speedtrace.analysis.figures_timeline import timeline, timeline_pair

__all__ = ["breakdown", "diff_figures", "gaps", "kernels", "overlap", "timeline", "timeline_pair"]
