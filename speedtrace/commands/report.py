"""`speedtrace report`: where a trace's GPU time went, as text, markdown, JSON or an HTML page."""

from __future__ import annotations

import math
import re

from speedtrace.commands.output import check_output, publish, trace_path
from speedtrace.errors import SpeedtraceError

DESCRIPTION = """\
Summarise a torch.profiler trace (.json or .json.gz) or a directory of per-rank traces:
GPU time split into compute, exposed communication, exposed memory traffic and idle time;
compute/communication overlap; SM efficiency and contention; select_backward kernels; the
longest idle and exposed-communication gaps with the phase and CPU op behind them; the top
kernels. Definitions: docs/metrics.md. Without PATH, a bundled sample trace is reported.
--format html writes one self-contained page (the same sections, with figures: the breakdown,
comm/compute overlap, gaps, top kernels and the timeline of the first step), which opens
offline in any browser.

examples:
  speedtrace report                       # the bundled H200 speedrun sample
  speedtrace report --sample list         # the bundled samples
  speedtrace report run/ --steps 11-12 --format md
  speedtrace report rank-0.trace.json.gz --format json > report.json
  speedtrace report run/ --format html -o report.html
"""

_STEPS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def add_arguments(parser) -> None:
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="trace file or directory of rank traces (default: a bundled sample)")
    parser.add_argument("--format", choices=("text", "md", "json", "html"), default="text",
                        help="output format (default: text; html needs -o)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of standard output (required for html)")
    parser.add_argument("--steps", metavar="A-B",
                        help="only profiler steps A to B (inclusive), or a single step N")
    parser.add_argument("--rank", metavar="R", help="only rank R")
    parser.add_argument("--top", metavar="N", default="10",
                        help="longest gaps and top kernels to list (default: 10)")
    parser.add_argument("--min-gap-us", metavar="X", default="5",
                        help="list gaps of at least X µs; shorter ones are only counted (default: 5)")
    parser.add_argument("--sample", metavar="NAME",
                        help="report a bundled sample instead of PATH ('list' shows them)")


def parse_steps(text: str | None) -> tuple[int, int] | None:
    """``"A-B"`` -> (A, B); ``"N"`` -> (N, N); None -> None. SpeedtraceError otherwise."""
    if text is None:
        return None
    m = _STEPS.match(text)
    if not m:
        raise SpeedtraceError(f"--steps: expected N or A-B (e.g. 11-12), got {text!r}")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise SpeedtraceError(f"--steps: {text!r} ends before it starts")
    return first, last


def _int_option(name: str, text: str | None, minimum: int = 0) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SpeedtraceError(f"{name}: expected a whole number, got {text!r}") from None
    if value < minimum:
        raise SpeedtraceError(f"{name}: must be at least {minimum}, got {value}")
    return value


def microseconds_option(name: str, text: str) -> float:
    """A non-negative finite number of µs from the command line (SpeedtraceError otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise SpeedtraceError(f"{name}: expected a number of microseconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SpeedtraceError(f"{name}: must be a finite number ≥ 0, got {text!r}")
    return value


def run(args) -> int:
    steps = parse_steps(args.steps)
    rank = _int_option("--rank", args.rank)
    top = _int_option("--top", args.top)
    min_gap_us = microseconds_option("--min-gap-us", args.min_gap_us)
    check_output(args.format, args.output)
    path = trace_path(args.path, args.sample)
    if path is None:
        return 0

    # Imported here so that `speedtrace --help` and the other commands stay light.
    from speedtrace.analysis.html_figures import report_figures
    from speedtrace.analysis.load import load
    from speedtrace.analysis.report import build_report
    from speedtrace.analysis.report_sections import report_sections

    trace_set = load(path, progress=None, echo_warnings=False)
    report = build_report(trace_set, steps=steps, rank=rank, top=top, min_gap_us=min_gap_us)
    publish(report, args.format, args.output, "report", report_sections,
            lambda: report_figures(trace_set, report))
    return 0
