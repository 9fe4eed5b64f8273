"""`speedtrace diff`: what changed between two traces (or trace sets), before and after a change."""

from __future__ import annotations

from speedtrace.commands.output import check_output, publish
from speedtrace.commands.report import microseconds_option

DESCRIPTION = """\
Compare two torch.profiler traces (.json or .json.gz) or directories of per-rank traces:
every totals metric before and after (per step when both sides have profiler steps, else over
the whole traces), kernels by key (renamed Inductor kernels paired, eager kernels fused into a
Triton kernel shown as absorbed), select_backward kernels, SM contention and comm queueing, the
idle and exposed-communication gap groups that appeared, disappeared or changed, and a verdict
naming only the changes larger than the per-step noise. Definitions: docs/metrics.md.
--format html writes one self-contained page: the same sections with figures (each metric
before and after with its noise band, the kernel Δµs waterfall, select_backward dedicated vs
fused, and the timelines of one step before and after, aligned).

examples:
  speedtrace diff before/ after/
  speedtrace diff parent.trace.json.gz record.trace.json.gz --format md
  speedtrace diff before/ after/ --format json > diff.json
  speedtrace diff before/ after/ --format html -o diff.html
"""


def add_arguments(parser) -> None:
    parser.add_argument("before", metavar="BEFORE", help="trace file or directory of rank traces")
    parser.add_argument("after", metavar="AFTER", help="trace file or directory of rank traces")
    parser.add_argument("--format", choices=("text", "md", "json", "html"), default="text",
                        help="output format (default: text; html needs -o)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of standard output (required for html)")
    parser.add_argument("--min-gap-us", metavar="X", default="5",
                        help="gaps shorter than X µs are left out of the gap groups (default: 5)")


def run(args) -> int:
    min_gap_us = microseconds_option("--min-gap-us", args.min_gap_us)
    check_output(args.format, args.output)

    # Imported here so that `speedtrace --help` and the other commands stay light.
    from speedtrace.analysis.diff import build_diff
    from speedtrace.analysis.diff_sections import diff_sections
    from speedtrace.analysis.html_figures import diff_figures
    from speedtrace.analysis.load import load

    before = load(args.before, progress=None, echo_warnings=False)
    after = load(args.after, progress=None, echo_warnings=False)
    doc = build_diff(before, after, min_gap_us=min_gap_us)
    publish(doc, args.format, args.output, "diff", diff_sections, lambda: diff_figures(before, after, doc))
    return 0
