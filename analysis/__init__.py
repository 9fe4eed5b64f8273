"""Trace analysis: read torch.profiler traces, compute the metrics of metrics.md, report.

The public API (stable; notebooks and ``diff`` build on it)::

    ts = speedtrace.analysis.load(path)        # -> TraceSet (one RankTrace per rank file)
    speedtrace.analysis.totals(ts)             # per (rank, device): the totals table
    speedtrace.analysis.steps(ts)              # per (rank, device, step): step totals
    speedtrace.analysis.phases(ts)             # GPU time per record_function phase
    speedtrace.analysis.gaps(ts)               # idle and exposed-comm gaps with attribution
    speedtrace.analysis.kernels(ts)            # the kernel table, by key
    speedtrace.analysis.device_report(rank_trace, device_id)  # one rank entry of the report JSON

Each list function returns ``Records`` (a list of plain dicts) with ``.to_pandas()`` for a
DataFrame built on demand. Importing this package imports neither pandas nor torch; figures live
in ``speedtrace.analysis.figures`` (plotly, imported on use). docs/architecture.md maps every
module and metric.
"""

from speedtrace.analysis.events import EventTable, RankTrace, Records, TraceSet  # noqa: F401
from speedtrace.analysis.load import load  # noqa: F401
from speedtrace.analysis.metrics import device_report, gaps, kernels, phases, steps, totals  # noqa: F401
