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
if (t.type === 'bar') { if (t.orientation === 'h') x = x / 2; else y = y / 2; }
return [xa._offset + xa.d2p(x), ya._offset + ya.d2p(y), r.width, r.height];
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

    def hover_text(self, plot_id: str, curve: int, point: int) -> str:
        """Move the mouse onto point ``point`` of trace ``curve`` of a plot and return the text
        of the hover label that appears (a real pointer event, so WebGL traces answer too)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        el = self.driver.find_element(By.ID, plot_id)
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
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
        ActionChains(self.driver).move_by_offset(0, int(h)).perform()  # leave, so the label goes
        return text

    def screenshot(self, out: Path, element_id: str | None = None) -> None:
        """The viewport from the top of the page, or one element (e.g. a plot) whole."""
        out.parent.mkdir(parents=True, exist_ok=True)
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
