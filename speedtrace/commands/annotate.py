"""`speedtrace annotate`: the trace plus speedtrace's analysis as tracks, to open in Perfetto."""

from __future__ import annotations

import os
import sys
import time

from speedtrace.commands.output import check_output_file, trace_path
from speedtrace.commands.report import microseconds_option
from speedtrace.errors import SpeedtraceError

DESCRIPTION = """\
Write a copy of a torch.profiler trace with speedtrace's analysis added as extra tracks, to
open in https://ui.perfetto.dev or chrome://tracing. Every original event is kept as written;
beside each GPU a process "GPU N · speedtrace analysis" holds counters (SM usage as
Σ blocks/SM of the running compute kernels, GPU busy/idle, exposed communication, exposed
memory traffic) and slices on their own threads: the idle, exposed-comm and exposed-memory
gaps of at least --min-gap-us with their cause, phase and CPU op; the phases and the steps as
the GPU ran them. `speedtrace report` on the written file gives the numbers of the original.

PATH is one trace file or a directory holding one rank's trace (and its run.json). The output
is gzip-compressed when its name ends in .gz. Without PATH, a bundled sample is annotated.

examples:
  speedtrace annotate -o sample.trace.json.gz          # the bundled H200 speedrun sample
  speedtrace annotate run/rank-0.trace.json.gz -o rank0.annotated.trace.json.gz
"""


def add_arguments(parser) -> None:
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="trace file, or a directory with one rank's trace (default: a bundled sample)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="the trace to write (required; .json, or .json.gz for gzip)")
    parser.add_argument("--min-gap-us", metavar="X", default="5",
                        help="mark gaps of at least X µs (default: 5)")
    parser.add_argument("--sample", metavar="NAME",
                        help="annotate a bundled sample instead of PATH ('list' shows them)")


def run(args) -> int:
    min_gap_us = microseconds_option("--min-gap-us", args.min_gap_us)
    path = trace_path(args.path, args.sample)
    if path is None:
        return 0
    out = check_output_file(args.output, "annotated trace")

    from speedtrace.analysis.load import load
    from speedtrace.analysis.perfetto import write_annotated

    t0 = time.monotonic()
    trace_set = load(path, progress=None)
    if len(trace_set.ranks) != 1:
        names = ", ".join(os.path.basename(r.path) for r in trace_set.ranks)
        raise SpeedtraceError(f"{path}: {len(trace_set.ranks)} rank traces ({names}); annotate one file at a "
                              "time (give the rank's file as PATH)")
    rank = trace_set.ranks[0]
    if os.path.abspath(rank.path) == os.path.abspath(out):
        raise SpeedtraceError(f"{out}: is the input trace; choose another output name")
    from speedtrace.analysis.decode import rank_from_filename
    from speedtrace.errors import warn

    if rank.distributed_info is None and rank_from_filename(rank.path) is not None \
            and rank_from_filename(out) != rank.rank:
        warn(f"{out}: the input's rank ({rank.rank}) comes only from its file name; keep 'rank-{rank.rank}' "
             "in the output's name so that other tools find it")
    added = write_annotated(rank.path, rank, out, trace_set.run, min_gap_us=min_gap_us)
    print(f"speedtrace annotate: wrote {out} ({added:,} events added) in {time.monotonic() - t0:.1f} s; "
          "open it in https://ui.perfetto.dev", file=sys.stderr)
    return 0
