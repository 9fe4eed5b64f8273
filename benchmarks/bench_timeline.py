"""How far the timeline scales: events drawn, HTML size, build time, first paint in Chromium.

For each trace (set) given: load it, build the timeline figure (``figures.timeline``), write the
page that ``speedtrace timeline`` writes, then open it in headless Chromium (selenium) and time
the first paint: from navigation start until the plot exists and two animation frames have
passed after ``Plotly.newPlot`` resolved (so WebGL has drawn); then a zoom (relayout to 2% of
the range and back to all of it, the slower of the two until drawn). Also checks that hovering
a kernel shows its name, and that the browser logged no error.

    python benchmarks/bench_timeline.py speedtrace/samples/h200-record speedtrace/samples/h100x8-normuon
    python benchmarks/bench_timeline.py run/ --steps 11-12 --rank 0 --out-dir /tmp/tl

Prints one markdown table row per trace (the "Timeline scale" table of RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

WAIT_PLOT_JS = """
var done = arguments[arguments.length - 1];
function ready() {
  var gd = document.getElementById('timeline');
  return gd && gd._fullLayout && gd.querySelector('.main-svg');
}
(function poll() {
  if (!ready()) { setTimeout(poll, 20); return; }
  requestAnimationFrame(function () { requestAnimationFrame(function () {
    var gl = document.querySelectorAll('#timeline canvas').length;
    var nowebgl = document.querySelector('#timeline .no-webgl') !== null;
    done({paint_ms: performance.now(), canvases: gl, nowebgl: nowebgl});
  }); });
})();
"""

# Time a relayout until drawn: zoom into the middle 2% of the range, then back out to all of it.
ZOOM_JS = """
var done = arguments[arguments.length - 1];
var gd = document.getElementById('timeline'), r = gd._fullLayout.xaxis.range.slice();
var mid = (r[0] + r[1]) / 2, half = (r[1] - r[0]) / 100;
function drawn(t0, then) {
  requestAnimationFrame(function () { requestAnimationFrame(function () { then(performance.now() - t0); }); });
}
var t0 = performance.now();
Plotly.relayout(gd, {'xaxis.range': [mid - half, mid + half]}).then(function () {
  drawn(t0, function (zoom_in) {
    var t1 = performance.now();
    Plotly.relayout(gd, {'xaxis.range': r}).then(function () {
      drawn(t1, function (zoom_out) { done({zoom_in_ms: zoom_in, zoom_out_ms: zoom_out}); });
    });
  });
});
"""

# The first compute kernel's marker: zoom around it, then the mouse goes there (below).
FIRST_KERNEL_JS = """
var gd = document.getElementById('timeline');
for (var i = 0; i < gd._fullData.length; i++) {
  var t = gd._fullData[i];  // decoded arrays (gd.data may hold them base64-encoded)
  if (t.mode === 'markers' && t.legendgroup === 'class:compute') {
    return {x: t.x[0], y: t.y[0], name: t.text[0]};
  }
}
return null;
"""

PIXEL_JS = """
var gd = document.getElementById('timeline'), r = gd.getBoundingClientRect();
var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, p = arguments[0];
return [r.left + xa._offset + xa.l2p(p[0]), r.top + ya._offset + ya.l2p(p[1])];
"""


def hover_shows_name(drv) -> bool:
    """Whether a real mouse move onto the first compute kernel shows its name in the hover."""
    import html

    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    k = drv.execute_script(FIRST_KERNEL_JS)
    if not k:
        return False
    drv.execute_script("var gd = document.getElementById('timeline');"
                       "return Plotly.relayout(gd, {'xaxis.range': [arguments[0] - 0.05, arguments[0] + 0.05]});",
                       k["x"])
    time.sleep(1.0)
    x, y = drv.execute_script(PIXEL_JS, [k["x"], k["y"]])
    drv.execute_script("window.scrollTo(0, arguments[0] - 300);", y)
    x, y = drv.execute_script(PIXEL_JS, [k["x"], k["y"]])
    action = ActionBuilder(drv)
    action.pointer_action.move_to_location(int(x), int(y))
    action.perform()
    time.sleep(0.8)
    text = drv.execute_script("var l = document.querySelector('.hoverlayer .hovertext');"
                              "return l ? l.textContent : null;")
    return bool(text) and html.unescape(k["name"])[:20] in text


def chromium(binary: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    # WebGL in headless Chromium without a GPU: SwiftShader (software).
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
              "--use-angle=swiftshader", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def first_paint(page: str, args) -> float:
    """Median seconds from navigation start to the drawn plot, over ``args.repeat`` fresh browsers."""
    paints = []
    for _ in range(args.repeat):
        drv = chromium(args.chromium, args.chromedriver)
        try:
            drv.set_script_timeout(120)
            drv.get("about:blank")
            drv.get("file://" + os.path.abspath(page))
            paints.append(drv.execute_async_script(WAIT_PLOT_JS)["paint_ms"] / 1000.0)
        finally:
            drv.quit()
    return sorted(paints)[len(paints) // 2]


def baseline(args, out_dir: str) -> float:
    """First paint of the same page shell around a 2-point WebGL plot: the cost of plotly.js
    itself (parsing 4-5 MB of script, starting WebGL) that every page pays."""
    import plotly.graph_objects as go

    from speedtrace.analysis.html_page import figure_html, page

    out = os.path.join(out_dir, "baseline.html")
    with open(out, "w", encoding="utf-8") as f:
        f.write(page("baseline", figure_html(go.Figure(go.Scattergl(x=[0, 1], y=[0, 1])), "timeline")))
    return first_paint(out, args)


def measure(path: str, args, out_dir: str) -> dict:
    from speedtrace.analysis.figures_timeline import build_figure, select_blocks, timeline_title
    from speedtrace.analysis.load import load
    from speedtrace.commands.report import parse_steps
    from speedtrace.commands.timeline import render_page

    steps = parse_steps(args.steps)
    ranks = None if args.rank is None else int(args.rank)
    t0 = time.perf_counter()
    ts = load(path, progress=False)
    t1 = time.perf_counter()
    blocks = select_blocks(ts, steps, ranks)
    fig = build_figure(blocks, title=timeline_title(ts, steps), x_title="time since the first event (ms)")
    t2 = time.perf_counter()
    html = render_page(ts, fig, title="speedtrace timeline", warnings=list(ts.warnings))
    t3 = time.perf_counter()
    name = os.path.basename(os.path.normpath(path)) or "trace"
    out = os.path.join(out_dir, f"{name}.timeline.html")
    with open(out, "w", encoding="utf-8") as f:
        f.write(html)
    row = {"trace": name, "ranks": len({b.rank.rank for b in blocks}), "lanes": None,
           "events": fig.layout.meta["events_drawn"], "traces": len(fig.data),
           "points": sum(len(t.x) for t in fig.data if t.x is not None),
           "html_mb": len(html.encode()) / 1e6, "load_s": t1 - t0, "build_s": t2 - t1, "page_s": t3 - t2}
    row["lanes"] = sum(1 for t in fig.layout.yaxis.ticktext if t)
    if not args.no_browser:
        paints, zooms = [], []
        for _ in range(args.repeat):
            drv = chromium(args.chromium, args.chromedriver)
            try:
                drv.set_script_timeout(120)
                drv.get("about:blank")
                drv.get("file://" + os.path.abspath(out))
                r = drv.execute_async_script(WAIT_PLOT_JS)
                paints.append(r["paint_ms"] / 1000.0)
                row["webgl"] = r["canvases"] > 0 and not r["nowebgl"]
                z = drv.execute_async_script(ZOOM_JS)
                zooms.append(max(z["zoom_in_ms"], z["zoom_out_ms"]) / 1000.0)
                row["hover_ok"] = hover_shows_name(drv)
                errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
                row["console_errors"] = len(errors)
                for e in errors[:3]:
                    print(f"  console: {e.get('message', '')[:200]}", file=sys.stderr)
            finally:
                drv.quit()
        row["paint_s"] = sorted(paints)[len(paints) // 2]
        row["zoom_s"] = sorted(zooms)[len(zooms) // 2]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace file or directory of rank traces")
    p.add_argument("--steps", metavar="A-B", help="only these profiler steps")
    p.add_argument("--rank", metavar="R", help="only this rank")
    p.add_argument("--out-dir", metavar="DIR", help="where the pages go (default: a temporary directory)")
    p.add_argument("--repeat", type=int, default=3, help="browser runs per page; the median is shown (default 3)")
    p.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary (default: %(default)s)")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="chromedriver (default: %(default)s)")
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="speedtrace-timeline-")
    os.makedirs(out_dir, exist_ok=True)
    print("| trace | ranks | lanes | GPU events drawn | plotly traces | points | HTML MB | load s | build s "
          "| page s | first paint s | zoom s | WebGL | hover | console errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    if not args.no_browser:
        print(f"| (page shell + plotly.js, a 2-point plot) | | | | | | | | | | {baseline(args, out_dir):.2f} | | | | |",
              flush=True)
    for path in args.paths:
        r = measure(path, args, out_dir)
        paint = f"{r['paint_s']:.2f}" if "paint_s" in r else "—"
        zoom = f"{r['zoom_s']:.2f}" if "zoom_s" in r else "—"
        print(f"| {r['trace']} | {r['ranks']} | {r['lanes']} | {r['events']:,} | {r['traces']} | {r['points']:,} "
              f"| {r['html_mb']:.1f} | {r['load_s']:.2f} | {r['build_s']:.2f} | {r['page_s']:.2f} | {paint} | {zoom} "
              f"| {r.get('webgl', '—')} | {r.get('hover_ok', '—')} | {r.get('console_errors', '—')} |", flush=True)
    print(f"pages in {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
