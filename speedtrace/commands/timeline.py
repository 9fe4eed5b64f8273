"""`speedtrace timeline`: the GPU timeline of a trace as one self-contained HTML file."""

from __future__ import annotations

import sys
import time

from speedtrace.commands.output import check_output_file, trace_path, write_file
from speedtrace.commands.report import _int_option, microseconds_option, parse_steps

DESCRIPTION = """\
Draw the GPU timeline of a torch.profiler trace (.json or .json.gz) or of a directory of
per-rank traces into one HTML file that opens offline in any browser (plotly.js inside it,
nothing fetched from the network): one lane per rank and stream, kernels coloured by class
(compute, NCCL communication, memcpy/memset); idle, exposed-communication and exposed-memory
gaps shaded with their cause, phase and CPU op in the hover; step boundaries; the phases
(record_function ranges) as the GPU ran them; and under the lanes the SM usage of each GPU
(Σ blocks/SM of the running compute kernels) with the times communication ran or waited while
compute held every SM. Drag to zoom, double-click to reset; the slider under the plot pans.
Without PATH, a bundled sample trace is drawn. Definitions: docs/metrics.md.

examples:
  speedtrace timeline -o timeline.html                 # the bundled H200 speedrun sample
  speedtrace timeline run/ --steps 11-12 -o steps.html
  speedtrace timeline run/ --rank 0 --steps 12 -o rank0.html
"""


def add_arguments(parser) -> None:
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="trace file or directory of rank traces (default: a bundled sample)")
    parser.add_argument("-o", "--output", metavar="FILE", help="the HTML file to write (required)")
    parser.add_argument("--steps", metavar="A-B",
                        help="only profiler steps A to B (inclusive), or a single step N")
    parser.add_argument("--rank", metavar="R", help="only rank R")
    parser.add_argument("--min-gap-us", metavar="X", default="5",
                        help="shade gaps of at least X µs (default: 5)")
    parser.add_argument("--sample", metavar="NAME",
                        help="draw a bundled sample instead of PATH ('list' shows them)")


def _progress(message: str) -> None:
    print(f"speedtrace timeline: {message}", file=sys.stderr, flush=True)


def render_page(trace_set, fig, *, title: str, warnings: list[str]) -> str:
    """The HTML page: title, the trace's path, its warnings, a line on how to read it, the figure."""
    from speedtrace.analysis.html_page import esc, figure_html, page
    from speedtrace.analysis.sections import safe_text

    parts = [f"<h1>{esc(title)}</h1>", f'<div class="subject">{esc(safe_text(trace_set.path))}</div>']
    parts += [f'<div class="warning">{esc(safe_text(w))}</div>' for w in warnings]
    meta = fig.layout.meta or {}
    parts.append(
        f'<p class="note">{meta.get("events_drawn", 0):,} GPU events. Hover a kernel (or the diamond in a '
        "gap) for its details; drag to zoom into a window, double-click to zoom out. Gaps: grey idle, red "
        "exposed communication, purple exposed memory traffic. Under the lanes, each GPU's SM usage "
        "(Σ blocks/SM of running compute kernels, drawn up to 2; the dashed line is 1: every SM claimed) "
        "with the times communication ran or waited in its queue while compute held every SM.</p>")
    parts.append(figure_html(fig, "timeline"))
    return page(title, "\n".join(parts))


def run(args) -> int:
    steps = parse_steps(args.steps)
    rank = _int_option("--rank", args.rank)
    min_gap_us = microseconds_option("--min-gap-us", args.min_gap_us)
    path = trace_path(args.path, args.sample)
    if path is None:
        return 0
    out = check_output_file(args.output, "HTML page")

    from speedtrace.analysis.figures_timeline import build_figure, select_blocks, timeline_title
    from speedtrace.analysis.load import load

    t0 = time.monotonic()
    trace_set = load(path, progress=None)
    blocks = select_blocks(trace_set, steps, rank)  # bad --rank/--steps fail here, before the work
    warnings = list(trace_set.warnings)
    for b in blocks:
        warnings += [w for w in b.tl.steps.warnings if w not in warnings]
    if not blocks:
        warnings.append(f"{trace_set.path}: no GPU activity to draw")
    n = sum(int(b.sel.sum()) for b in blocks)
    _progress(f"drawing {n:,} GPU events of {len(blocks)} GPU(s)")
    fig = build_figure(blocks, title=timeline_title(trace_set, steps), min_gap_us=min_gap_us,
                       x_title="time since the first event (ms)")
    html = render_page(trace_set, fig, title="speedtrace timeline", warnings=warnings)
    write_file(out, html, "HTML page")
    _progress(f"wrote {out} ({len(html.encode()) / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    return 0
