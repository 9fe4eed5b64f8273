"""What the HTML report and diff cost: file size, build time, and time until every plot is drawn.

For each page: run the command a user runs (``speedtrace report ... --format html -o FILE`` or
``speedtrace diff ... --format html -o FILE``) in a fresh process ``--repeat`` times and take
the median wall time (imports, loading, analysis, figures, writing), then open the page in
headless Chromium from file:// and time from navigation start until every plotly plot of the
page exists and two animation frames have passed (so WebGL has drawn), median over fresh
browsers. The anchor is the page shell with one 2-point plot (what plotly.js alone costs), as in
bench_timeline.py.

    python benchmarks/bench_html.py
    python benchmarks/bench_html.py --repeat 5 --out-dir /tmp/html

Prints a markdown table (the "HTML report and diff" table of RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_timeline import baseline, chromium  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "speedtrace", "samples")

PAGES = {
    "report h200-record (bundled, 5 steps)": ["report", "--sample", "h200-record"],
    "report h100x8-normuon (8 ranks)": ["report", "--sample", "h100x8-normuon"],
    "diff h200-parent → h200-record": ["diff", os.path.join(SAMPLES, "h200-parent"),
                                        os.path.join(SAMPLES, "h200-record")],
}

# Resolves once every plot on the page is drawn (each has its layout), two frames later.
ALL_PLOTS_JS = """
var done = arguments[arguments.length - 1];
function ready() {
  var plots = document.querySelectorAll('.plot');
  if (!plots.length) return false;
  for (var i = 0; i < plots.length; i++) if (!plots[i]._fullLayout) return false;
  return plots.length;
}
(function poll() {
  var n = ready();
  if (n) {
    requestAnimationFrame(function () { requestAnimationFrame(function () {
      done({paint_ms: performance.now(), plots: n});
    }); });
  } else { setTimeout(poll, 20); }
})();
"""


def build(args_cli: list[str], out: str, repeat: int) -> float:
    """Median wall seconds of the command, run in a fresh process each time."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "speedtrace", *args_cli, "--format", "html", "-o", out],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paint(page: str, args) -> tuple[float, int]:
    """Median seconds until every plot is drawn, and the number of plots."""
    paints, plots = [], 0
    for _ in range(args.repeat):
        drv = chromium(args.chromium, args.chromedriver)
        try:
            drv.set_script_timeout(120)
            drv.get("about:blank")
            drv.get("file://" + os.path.abspath(page))
            got = drv.execute_async_script(ALL_PLOTS_JS)
            paints.append(got["paint_ms"] / 1000.0)
            plots = got["plots"]
        finally:
            drv.quit()
    return statistics.median(paints), plots


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--out-dir", default=None, help="where the pages go (default: a temporary directory)")
    p.add_argument("--repeat", type=int, default=3, help="builds and browser runs per page; medians shown (3)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="chromedriver")
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="bench-html-")
    os.makedirs(out_dir, exist_ok=True)

    print("| page | HTML MB | plots | build s (median) | all plots drawn s (median) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| page shell + plotly.js, one 2-point plot | | 1 | | {baseline(args, out_dir):.2f} |")
    for i, (label, cli) in enumerate(PAGES.items()):
        out = os.path.join(out_dir, f"page-{i}.html")
        seconds = build(cli, out, args.repeat)
        drawn, plots = paint(out, args)
        print(f"| {label} | {os.path.getsize(out) / 1e6:.1f} | {plots} | {seconds:.2f} | {drawn:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
