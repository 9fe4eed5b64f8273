"""Open a loaded trace set in Holistic Trace Analysis (the optional extra ``speedtrace[hta]``).

HTA does well what speedtrace does not rewrite (critical path, queue length, CUPTI counters)
and serves as an independent cross-check of the shared metrics. ``open`` hands HTA the same files
with the ranks speedtrace settled on, so both tools analyse the same thing; metrics.md "Agreement
with HTA" says when their numbers match.
"""

from __future__ import annotations

import os

from speedtrace.errors import SpeedtraceError

INSTALL_HINT = "pip install speedtrace[hta]"


def open(trace_set):  # noqa: A001 - mirrors the verb users expect: speedtrace.analysis.hta.open(ts)
    """An ``hta.trace_analysis.TraceAnalysis`` over the files of ``trace_set``.

    Ranks come from speedtrace's loader (metadata, else the file name), passed to HTA as an
    explicit rank -> file map: HTA's own discovery would read ``run.json`` as a trace and put
    every file without ``distributedInfo`` on rank 0. ``include_last_profiler_step=True``
    because HTA otherwise drops the GPU work of the last profiler step, which speedtrace counts.
    """
    try:
        from hta.trace_analysis import TraceAnalysis
    except ImportError:
        raise SpeedtraceError(
            f"{trace_set.path}: Holistic Trace Analysis (module 'hta') is not installed; "
            f"{INSTALL_HINT}") from None
    files = {int(rt.rank): os.path.abspath(rt.path) for rt in trace_set.ranks}
    if not files:
        raise SpeedtraceError(f"{trace_set.path}: no rank traces to open in HTA")
    trace_dir = os.path.commonpath([os.path.dirname(f) for f in files.values()])
    return TraceAnalysis(trace_files=files, trace_dir=trace_dir, include_last_profiler_step=True)
