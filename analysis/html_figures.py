"""Which figures the HTML report and diff carry, and beside which section each goes.

``render_html`` places figures by section key (analysis/sections.py); this module picks them:
for a report, the breakdown and the comm/compute overlap beside the per-rank table (or the first
(rank, device) entry where there is none),
the timeline of one step beside the step table, the gaps beside the gap list and the top kernels
beside the kernel table; for a diff, each figure of ``figures.diff_figures`` beside the section of
the same name and the two timelines of one step after the verdict. plotly is imported here only.
"""

from __future__ import annotations

import dataclasses

from speedtrace.analysis.report_sections import DETAIL_ALL_UP_TO


def _selected_ranks(report: dict) -> list[int] | None:
    rank = (report.get("options") or {}).get("rank")
    return None if rank is None else [int(rank)]


def first_step(report: dict) -> int | None:
    """The first profiled step the report covers (of its first entry), or None without steps."""
    for entry in report.get("ranks", []):
        for s in entry.get("steps") or []:
            if s.get("step") is not None:
                return int(s["step"])
    return None


def _has_comm(report: dict) -> bool:
    return any((e.get("totals") or {}).get("comm_kernel_count") for e in report.get("ranks", []))


def report_figures(ts, report: dict) -> dict[str, list]:
    """Section key -> figures for the HTML page of ``report`` (built from the trace set ``ts``).
    The charts cover the ranks the report covers. The timeline shows one step (the first the
    report covers): a whole multi-step trace would make the page heavy, and a step is what a
    reader compares; the breakdown, gap and kernel charts show every step of the trace."""
    from speedtrace.analysis import figures

    if not report.get("ranks"):
        return {}   # no GPU activity: nothing to draw
    step = first_step(report)
    ranks = _selected_ranks(report)
    if ranks is not None:
        # --rank R: every chart shows the rank the report is about, as the text does
        ts = dataclasses.replace(ts, ranks=[r for r in ts.ranks if r.rank in ranks])
    summary = [figures.breakdown(ts)]
    if _has_comm(report):
        summary.append(figures.overlap(ts))
    # The summary charts cover every rank: beside the per-rank table where the report has one
    # (many ranks), else beside the first (rank, device) entry.
    summary_key = "ranks" if len(report["ranks"]) > DETAIL_ALL_UP_TO else "entry"
    min_gap_us = float((report.get("options") or {}).get("min_gap_us") or 0.0)
    return {
        summary_key: summary,
        "steps": [figures.timeline(ts, steps=None if step is None else (step, step), ranks=ranks)],
        "gaps": [figures.gaps(ts, min_gap_us=min_gap_us)],
        "kernels": [figures.kernels(ts)],
    }


def diff_figures(before_ts, after_ts, doc: dict) -> dict[str, list]:
    """Section key -> figures for the HTML page of the diff ``doc`` of ``before_ts`` and
    ``after_ts``: each diff figure beside its section, the aligned timelines after the verdict."""
    from speedtrace.analysis import figures

    out: dict[str, list] = {key: [fig] for key, fig in figures.diff_figures(doc).items()}
    out.setdefault("verdict", []).append(figures.timeline_pair(before_ts, after_ts))
    return out
