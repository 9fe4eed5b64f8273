"""A headless Chromium for the tests, driven by selenium, with the network off.

``Browser.open(path)`` loads an HTML file from ``file://`` and returns what a reader would meet:
console messages, every request the page made (from the performance log, i.e. the DevTools
``Network`` events), and each plotly plot with its number of traces. The browser and its driver
are Debian's (/usr/bin/chromium, /usr/bin/chromedriver, or $SPEEDTRACE_CHROMIUM and
$SPEEDTRACE_CHROMEDRIVER); selenium is given the driver's path, so its driver manager never runs
and nothing is downloaded.

The network is off three ways: every host name resolves to nothing (``--host-resolver-rules``),
DevTools emulates an offline network, and background services are disabled; a test then checks
in the log that the page asked for nothing but itself (and ``data:`` URIs).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SPEEDTRACE_CHROMIUM") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("SPEEDTRACE_CHROMEDRIVER") or "/usr/bin/chromedriver"

# JavaScript: every plotly plot on the page with its trace count and whether it finished drawing.
_PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  var full = gd._fullData || [];
  return {id: gd.id, traces: (gd.data || []).length, drawn: !!gd._fullLayout,
          // points as plotly counts them (x may arrive as a typed array decoded from base64)
          points: full.reduce(function (n, t) { return n + (t._length || 0); }, 0),
          // traces that carry per-point hover text or a hover template
          hover: full.filter(function (t) {
            return t.hoverinfo !== 'skip' && t.hoverinfo !== 'none' &&
              ((t.hovertext && t.hovertext.length) || (t.text && t.text.length) || t.hovertemplate);
          }).length};
});
"""

# JavaScript: the pixel position (within the plot's div) of one point of one trace, and the div's
# size; null when the point has no position (a gap between segments).
_POINT_JS = """
var gd = document.getElementById(arguments[0]), t = gd._fullData[arguments[1]], i = arguments[2];
if (!t || t.x == null || t.x[i] == null || t.y[i] == null) return null;
var L = gd._fullLayout, xa = L[t.xaxis.replace('x', 'xaxis')], ya = L[t.yaxis.replace('y', 'yaxis')];
var r = gd.getBoundingClientRect(), x = t.x[i], y = t.y[i];
// a bar answers inside itself: aim at the middle of its length
if (t.type === 'bar') {
  var base = t.base == null ? 0 : Number(Array.isArray(t.base) || ArrayBuffer.isView(t.base) ? t.base[i] : t.base);
  if (t.orientation === 'h') x = base + Number(x) / 2; else y = base + Number(y) / 2;
}
return [xa._offset + xa.d2p(x), ya._offset + ya.d2p(y), r.width, r.height];
"""

# JavaScript: a point (curve, index) of the first trace of a plot whose name contains arguments[1]
# and whose per-point text or hover text contains arguments[2]; null when none.
_FIND_JS = """
var gd = document.getElementById(arguments[0]), want = arguments[1], has = arguments[2];
var full = gd._fullData || [];
for (var c = 0; c < full.length; c++) {
  var t = full[c];
  if (t.hoverinfo === 'skip' || (want && String(t.name || '').indexOf(want) < 0)) continue;
  var texts = Array.isArray(t.hovertext) ? t.hovertext : (Array.isArray(t.text) ? t.text : null);
  if (!texts || !t.x) continue;
  var hits = [];
  for (var i = 0; i < t._length; i++) {
    if (t.x[i] == null || t.y[i] == null || isNaN(t.x[i])) continue;
    if (!has || String(texts[i]).indexOf(has) >= 0) hits.push(i);
  }
  // the middle hit: the first point of a lane often sits beside a gap or a step boundary
  if (hits.length) return [c, hits[Math.floor(hits.length / 2)]];
}
return null;
"""

# JavaScript (async): narrow the x axis of one point's trace to 1/2000 of its span around the
# point; calls back with what to restore ({axis: range}), or null when nothing was changed.
_ZOOM_JS = """
var done = arguments[arguments.length - 1];
var gd = document.getElementById(arguments[0]), t = gd._fullData[arguments[1]], i = arguments[2];
// only scatter traces (the timeline's lanes) are dense enough to need it
if (!arguments[3] || !t || !/^scatter/.test(t.type) || t.x == null || t.x[i] == null) { done(null); return; }
var name = t.xaxis.replace('x', 'xaxis'), xa = gd._fullLayout[name];
if (xa.type !== 'linear') { done(null); return; }
var r = xa.range.slice(), half = (r[1] - r[0]) / 4000, x = Number(t.x[i]), upd = {};
upd[name + '.range'] = [x - half, x + half];
var saved = {}; saved[name + '.range'] = r;
Plotly.relayout(gd, upd).then(function () { done(saved); });
"""

_RESTORE_JS = """
var done = arguments[arguments.length - 1];
Plotly.relayout(document.getElementById(arguments[0]), arguments[1]).then(function () { done(true); });
"""

_HOVER_JS = """
return Array.from(document.getElementById(arguments[0]).querySelectorAll('.hoverlayer .hovertext'))
  .map(function (e) { return e.textContent; }).join('\\n');
"""


def missing_reason() -> str | None:
    """Why no browser test can run here, or None when Chromium, its driver and selenium are present."""
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class PageResult:
    """What loading one page produced."""

    url: str
    console: list[dict] = field(default_factory=list)     # {"level", "message"}
    requests: list[str] = field(default_factory=list)     # every URL the page requested
    plots: list[dict] = field(default_factory=list)       # {"id", "traces", "drawn", "points", "hover"}
    load_ms: float = 0.0                                  # navigation start to every plot drawn

    def errors(self) -> list[str]:
        return [m["message"] for m in self.console if m["level"] in ("SEVERE", "ERROR")]

    def foreign_requests(self) -> list[str]:
        """Requests for anything but the page itself or an inline ``data:`` URI."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


class Browser:
    """One headless Chromium session; reuse it for the pages of a test module."""

    def __init__(self, width: int = 1400, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        # Selenium Manager is never consulted when the service has a path; SE_OFFLINE keeps it
        # from reaching out should a future selenium consult it anyway.
        os.environ.setdefault("SE_OFFLINE", "true")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            # WebGL (plotly's scattergl) through the software rasteriser
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1",
            # no network: nothing resolves; no background traffic of the browser itself
            "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--allow-file-access-from-files",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(60)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})

    def close(self) -> None:
        self.driver.quit()

    def _drain_logs(self) -> tuple[list[dict], list[str]]:
        console = [{"level": e.get("level"), "message": e.get("message", "")}
                   for e in self.driver.get_log("browser")]
        requests = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        return console, requests

    def open(self, path: Path, timeout_s: float = 45.0) -> PageResult:
        """Load ``path`` and wait until every plot container has been drawn by plotly."""
        self._drain_logs()  # forget the previous page
        url = Path(path).resolve().as_uri()
        t0 = time.perf_counter()
        self.driver.get(url)
        want = self.driver.execute_script("return document.querySelectorAll('div.plot').length")
        deadline = time.monotonic() + timeout_s
        plots = []
        while time.monotonic() < deadline:
            plots = self.driver.execute_script(_PLOTS_JS)
            if len(plots) >= want and all(p["drawn"] for p in plots):
                break
            time.sleep(0.1)
        load_ms = (time.perf_counter() - t0) * 1000
        console, requests = self._drain_logs()
        return PageResult(url=url, console=console, requests=requests, plots=plots, load_ms=load_ms)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def hover_text(self, plot_id: str, curve: int, point: int, zoom: bool = True) -> str:
        """Move the mouse onto point ``point`` of trace ``curve`` of a plot and return the text
        of the hover label that appears (a real pointer event, so WebGL traces answer too).
        ``zoom``: first narrow the x axis around the point (and restore it after), so that in a
        dense timeline the point is the closest one to the pointer and no neighbour answers."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        el = self.driver.find_element(By.ID, plot_id)
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        saved = self.driver.execute_async_script(_ZOOM_JS, plot_id, curve, point, zoom)
        try:
            where = self.js(_POINT_JS, plot_id, curve, point)
            if where is None:
                return ""
            x, y, w, h = where
            ActionChains(self.driver).move_to_element_with_offset(
                el, int(round(x - w / 2)), int(round(y - h / 2))).perform()
            deadline = time.monotonic() + 3
            text = ""
            while time.monotonic() < deadline and not text:
                time.sleep(0.1)
                text = self.js(_HOVER_JS, plot_id)
            self.js("Plotly.Fx.unhover(document.getElementById(arguments[0]))", plot_id)
            return text
        finally:
            if saved is not None:
                self.driver.execute_async_script(_RESTORE_JS, plot_id, saved)
            # the pointer stays where it was: a redraw would show the label again
            self.js("Plotly.Fx.unhover(document.getElementById(arguments[0]))", plot_id)

    def find_point(self, plot_id: str, trace_name: str = "", text: str = "") -> tuple[int, int] | None:
        """(curve, point) of a point with hover text containing ``text`` in the first trace named
        like ``trace_name`` (the middle one of its matching points)."""
        found = self.js(_FIND_JS, plot_id, trace_name, text)
        return None if found is None else (found[0], found[1])

    def screenshot(self, out: Path, element_id: str | None = None) -> None:
        """The viewport from the top of the page, or one element (e.g. a plot) whole."""
        out.parent.mkdir(parents=True, exist_ok=True)
        # no hover label left over from a test in the picture
        self.js("document.querySelectorAll('.js-plotly-plot').forEach(function (gd) { Plotly.Fx.unhover(gd); })")
        if element_id is None:
            self.js("window.scrollTo(0, 0)")
            self.driver.save_screenshot(str(out))
        else:
            from selenium.webdriver.common.by import By

            el = self.driver.find_element(By.ID, element_id)
            self.js("arguments[0].scrollIntoView()", el)
            el.screenshot(str(out))


@pytest.fixture(scope="module")
def browser():
    """A Chromium for the whole module; the tests are skipped, with the reason, where it is absent."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    b = Browser()
    try:
        yield b
    finally:
        b.close()
