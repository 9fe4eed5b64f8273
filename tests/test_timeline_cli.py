"""`speedtrace timeline`: one self-contained HTML file, no network loads, bad input as `report`."""

from __future__ import annotations

import json
import re

import pytest
from synth import Trace
from test_figures import HOSTILE, SCRIPT, step_trace

from speedtrace.cli import main

# Elements that would make the browser fetch something (plotly.js itself mentions URLs in strings).
NETWORK_LOAD = re.compile(r"<(script|img|iframe|embed|source|video|audio)\b[^>]*\bsrc\s*=|<link\b[^>]*\bhref\s*=|"
                          r"@import|url\(\s*['\"]?https?:", re.IGNORECASE)


def figure_spec(page: str) -> dict:
    """The timeline figure's JSON as embedded by html_page.figure_html."""
    m = re.search(r'<script>\(function\(\)\{var f=(\{.*?\});Plotly\.newPlot\("timeline"', page, re.S)
    assert m, "no timeline figure in the page"
    return json.loads(m.group(1))


def test_one_offline_page(tmp_path, capsys):
    step_trace(tmp_path, gemm=HOSTILE, small=SCRIPT)
    out = tmp_path / "t.html"
    assert main(["timeline", str(tmp_path / "rank-0.trace.json"), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count("<html") == 1 and page.count("</html>") == 1
    assert NETWORK_LOAD.search(page) is None
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # plotly.js inside, and the figure drawn from inline JSON.
    assert "Plotly.newPlot(\"timeline\"" in page and len(page) > 1_000_000
    spec = figure_spec(page)
    assert spec["layout"]["meta"]["events_drawn"] == 4
    # Hostile names: not markup anywhere in the page, escaped in the figure.
    assert "<img src=x" not in page and "</script><script>alert(2)" not in page
    names = [n for t in spec["data"] if t.get("legendgroup") == "class:compute" and "text" in t for n in t["text"]]
    assert "&lt;img src=x onerror=alert(1)&gt;" in names
    err = capsys.readouterr().err
    assert "wrote" in err and str(out) in err


def test_warnings_at_the_top(tmp_path):
    t = Trace(rank=None)  # no rank anywhere: the loader warns
    t.step(1, 0, 50)
    t.launch_kernel("gemm", 1, 5, 10, grid=132)
    src = t.write(tmp_path / "trace<i>.json")
    out = tmp_path / "t.html"
    assert main(["timeline", str(src), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    warning = re.search(r'<div class="warning">(.*?)</div>', page)
    assert warning and "no rank metadata" in warning.group(1) and "trace&lt;i&gt;.json" in warning.group(1)
    assert page.index('class="warning"') < page.index('id="timeline"')


def test_steps_and_rank_select(tmp_path):
    step_trace(tmp_path)
    out = tmp_path / "t.html"
    assert main(["timeline", str(tmp_path / "rank-0.trace.json"), "--steps", "11", "--rank", "0",
                 "-o", str(out)]) == 0
    assert figure_spec(out.read_text(encoding="utf-8"))["layout"]["meta"]["events_drawn"] == 4


def test_sample_list(capsys):
    assert main(["timeline", "--sample", "list"]) == 0
    assert "h200-record" in capsys.readouterr().out


@pytest.mark.slow
def test_default_sample(tmp_path):
    out = tmp_path / "sample.html"
    assert main(["timeline", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert NETWORK_LOAD.search(page) is None
    assert figure_spec(page)["layout"]["meta"]["events_drawn"] > 20_000


def test_bad_input(tmp_path, capsys):
    step_trace(tmp_path)
    src = str(tmp_path / "rank-0.trace.json")
    empty = tmp_path / "empty.json"
    empty.write_text("")
    out = str(tmp_path / "o.html")
    cases = [
        (["timeline", str(tmp_path / "nope.json"), "-o", out], "no such file"),
        (["timeline", str(empty), "-o", out], "empty file"),
        (["timeline", src, "--steps", "x-y", "-o", out], "--steps"),
        (["timeline", src, "--steps", "20-30", "-o", out], "no GPU activity in steps 20-30"),
        (["timeline", src, "--rank", "4", "-o", out], "no rank 4"),
        (["timeline", src, "--rank", "-1", "-o", out], "--rank"),
        (["timeline", src, "-o", str(tmp_path / "missing" / "o.html")], "does not exist"),
        (["timeline", src, "-o", str(tmp_path)], "is a directory"),
        (["timeline", src, "--sample", "h200-record", "-o", out], "not both"),
        (["timeline", "--sample", "nope", "-o", out], "no bundled sample"),
        (["timeline", src, "--min-gap-us", "-3", "-o", out], "--min-gap-us"),
        (["timeline", src], "-o FILE"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "o.html").exists()


# ---------------------------------------------------------------------------- in a browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

WAIT_PLOT = """
var done = arguments[arguments.length - 1];
(function poll() {
  var gd = document.getElementById('timeline');
  if (!(gd && gd._fullLayout && gd.querySelector('.main-svg'))) { setTimeout(poll, 20); return; }
  requestAnimationFrame(function () { requestAnimationFrame(function () {
    done({canvases: gd.querySelectorAll('canvas').length, nowebgl: gd.querySelector('.no-webgl') !== null});
  }); });
})();
"""


@pytest.mark.slow
def test_page_draws_in_chromium_and_names_stay_text(tmp_path):
    """The page's CSP lets plotly's WebGL run (no "WebGL is not supported"), the browser logs no
    error, no hostile name became markup, and hovering the hostile kernel shows its name as text."""
    import os
    import time

    webdriver = pytest.importorskip("selenium.webdriver")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium and chromedriver are not installed (apt: chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    step_trace(tmp_path, gemm=HOSTILE, small=SCRIPT)
    out = tmp_path / "t.html"
    assert main(["timeline", str(tmp_path / "rank-0.trace.json"), "-o", str(out)]) == 0
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
              "--use-angle=swiftshader", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        drv.set_script_timeout(60)
        drv.get(out.as_uri())
        drawn = drv.execute_async_script(WAIT_PLOT)
        assert drawn["canvases"] > 0 and not drawn["nowebgl"]
        assert drv.execute_script("return document.querySelectorAll('img, iframe').length") == 0
        # Move the mouse onto the hostile kernel (the gemm, [10, 20) µs, on the first stream lane).
        x, y = drv.execute_script("""
            var gd = document.getElementById('timeline'), r = gd.getBoundingClientRect();
            var t = gd._fullData.filter(function (t) { return t.legendgroup === 'class:compute'
                                                        && t.mode === 'markers'; })[0];
            var i = t.text.indexOf('&lt;img src=x onerror=alert(1)&gt;');
            var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])];""")
        action = ActionBuilder(drv)
        action.pointer_action.move_to_location(int(x), int(y))
        action.perform()
        time.sleep(0.5)
        label = drv.execute_script("var l = document.querySelector('.hoverlayer .hovertext');"
                                   "return l ? l.textContent : null;")
        assert label and HOSTILE in label
        assert drv.execute_script("return document.querySelectorAll('img, iframe').length") == 0
        errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        drv.quit()
