"""`speedtrace diff`: what changed between two traces (or trace sets), before and after a change."""

from __future__ import annotations

import sys

from speedtrace.commands.report import microseconds_option
from speedtrace.errors import warn

DESCRIPTION = """\
Compare two torch.profiler traces (.json or .json.gz) or directories of per-rank traces:
every totals metric before and after (per step when both sides have profiler steps, else over
the whole traces), kernels by key (renamed Inductor kernels paired, eager kernels fused into a
Triton kernel shown as absorbed), select_backward kernels, SM contention and comm queueing, the
idle and exposed-communication gap groups that appeared, disappeared or changed, and a verdict
naming only the changes larger than the per-step noise. Definitions: docs/metrics.md.

examples:
  speedtrace diff before/ after/
  speedtrace diff parent.trace.json.gz record.trace.json.gz --format md
  speedtrace diff before/ after/ --format json > diff.json
"""


def add_arguments(parser) -> None:
    parser.add_argument("before", metavar="BEFORE", help="trace file or directory of rank traces")
    parser.add_argument("after", metavar="AFTER", help="trace file or directory of rank traces")
    parser.add_argument("--format", choices=("text", "md", "json"), default="text",
                        help="output format (default: text)")
    parser.add_argument("--min-gap-us", metavar="X", default="5",
                        help="gaps shorter than X µs are left out of the gap groups (default: 5)")


def run(args) -> int:
    min_gap_us = microseconds_option("--min-gap-us", args.min_gap_us)

    # Imported here so that `speedtrace --help` and the other commands stay light.
    from speedtrace.analysis.diff import build_diff
    from speedtrace.analysis.diff_sections import diff_sections
    from speedtrace.analysis.load import load
    from speedtrace.analysis.render import render
    from speedtrace.analysis.report import jsonable

    before = load(args.before, progress=None, echo_warnings=False)
    after = load(args.after, progress=None, echo_warnings=False)
    doc = build_diff(before, after, min_gap_us=min_gap_us)
    if args.format == "json":
        import json

        # The JSON carries the warnings too; stderr shows them to whoever runs the command.
        for w in doc["warnings"]:
            warn(w)
        print(json.dumps(jsonable(doc), allow_nan=False, indent=1))
        return 0
    # The text forms use µ, → and −; never fail on a terminal that cannot show them.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    print(render(diff_sections(doc), args.format), end="")
    return 0
