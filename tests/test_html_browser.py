"""The HTML outputs in a real browser (headless Chromium, network off): the report, the diff and
the timeline of the bundled samples draw every plot with data and hover text, log no console
error and request nothing but the file itself; pages built from hostile names run nothing.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's chromium and chromium-driver; .ci/run
installs them) and selenium; skipped with the reason where they are absent. One browser serves
the whole module. With SPEEDTRACE_SCREENSHOTS=DIR set, the screenshots used in README.md are
written to DIR (``SPEEDTRACE_SCREENSHOTS=docs/img pytest tests/test_html_browser.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import hostile
import pytest
from browser import browser  # noqa: F401  (the module-scoped fixture)

from speedtrace import samples
from speedtrace.analysis.html_page import esc
from speedtrace.cli import main

pytest.importorskip("plotly")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Every page the tests open, built once by the commands a user runs."""
    root = tmp_path_factory.mktemp("pages")
    before, after = samples.sample_path("h200-parent"), samples.sample_path("h200-record")
    bad_before = hostile.build(hostile.hostile_dir(root, "before"))
    bad_after = hostile.build(hostile.hostile_dir(root, "after"), scale=1.5)
    out = {name: root / f"{name}.html" for name in
           ("report", "diff", "timeline", "ranks8", "bad_report", "bad_diff", "bad_timeline")}
    for argv in (
        ["report", "--format", "html", "-o", out["report"]],
        ["diff", before, after, "--format", "html", "-o", out["diff"]],
        # one step of the bundled sample: the detail a reader zooms into (the whole-trace scale
        # is measured in benchmarks/RESULTS.md)
        ["timeline", "--steps", "63", "-o", out["timeline"]],
        ["report", "--sample", "h100x8-normuon", "--format", "html", "-o", out["ranks8"]],
        ["report", bad_before, "--format", "html", "-o", out["bad_report"]],
        ["diff", bad_before, bad_after, "--format", "html", "-o", out["bad_diff"]],
        ["timeline", bad_before, "-o", out["bad_timeline"]],
    ):
        assert main([str(a) for a in argv]) == 0
    return out


def screenshot_dir(tmp_path) -> Path:
    d = os.environ.get("SPEEDTRACE_SCREENSHOTS")
    return Path(d) if d else tmp_path


def check_page(result, plots: int) -> None:
    """No console error, nothing requested but the page, ``plots`` plots each drawn with data
    and with hover text on at least one trace."""
    assert not result.errors(), result.errors()
    assert result.requests and result.requests[0] == result.url
    assert not result.foreign_requests(), result.foreign_requests()
    assert len(result.plots) == plots, result.plots
    for p in result.plots:
        assert p["drawn"] and p["traces"] > 0 and p["points"] > 0, p
        assert p["hover"] > 0, p


def test_report(browser, pages, tmp_path):  # noqa: F811
    r = browser.open(pages["report"])
    # breakdown, the timeline of one step, gaps, top kernels (no comm: no overlap chart)
    check_page(r, plots=4)
    timeline = r.plots[1]["id"]
    point = browser.find_point(timeline, "compute")
    assert point is not None
    label = browser.hover_text(timeline, *point)
    assert "(compute)" in label and "µs" in label and "step 62" in label
    shots = screenshot_dir(tmp_path)
    browser.screenshot(shots / "report.png")
    assert (shots / "report.png").stat().st_size > 10_000


def test_diff(browser, pages, tmp_path):  # noqa: F811
    r = browser.open(pages["diff"])
    # metrics, kernel waterfall, select_backward, gap groups, the aligned timelines
    check_page(r, plots=5)
    waterfall = r.plots[1]["id"]
    point = browser.find_point(waterfall)
    assert point is not None and browser.hover_text(waterfall, *point)
    browser.screenshot(screenshot_dir(tmp_path) / "diff.png")


def test_timeline(browser, pages, tmp_path):  # noqa: F811
    r = browser.open(pages["timeline"])
    check_page(r, plots=1)
    (plot,) = r.plots
    # every kernel of the step drawn (the step has about 5,100)
    assert plot["points"] > 5_000
    point = browser.find_point(plot["id"], "compute")
    label = browser.hover_text(plot["id"], *point)
    assert "(compute)" in label and "grid" in label
    gap = browser.find_point(plot["id"], "idle gap")
    assert gap is not None and "cause" in browser.hover_text(plot["id"], *gap)
    browser.screenshot(screenshot_dir(tmp_path) / "timeline.png", element_id=plot["id"])


def test_eight_ranks(browser, pages):  # noqa: F811
    r = browser.open(pages["ranks8"])
    # breakdown and overlap of the 8 ranks, the timeline of one step on all ranks, gaps, kernels
    check_page(r, plots=5)
    lanes = browser.js("return document.getElementById(arguments[0])._fullLayout.yaxis.ticktext || []",
                       r.plots[2]["id"])
    assert sum("rank 7" in str(t) for t in lanes) >= 1


# page -> (plots, index of the timeline plot whose hover labels are read, or None): a report of a
# trace with comm adds the overlap chart; the diff's aligned timelines come last. The report's
# timeline is the timeline page's figure, so its labels are read once, there.
HOSTILE_PAGES = {"bad_report": (5, None), "bad_diff": (5, 4), "bad_timeline": (1, 0)}


@pytest.mark.parametrize("page", list(HOSTILE_PAGES))
def test_hostile_names_stay_inert(browser, pages, page):  # noqa: F811
    plots, timeline = HOSTILE_PAGES[page]
    r = browser.open(pages[page])
    # an <img src=x> that got through would also show as a request for file:///.../x
    check_page(r, plots=plots)
    assert browser.js("return typeof window.__pwned") == "undefined"
    # nothing injected: no image, no script beyond plotly.js and one per figure
    assert browser.js("return document.querySelectorAll('img').length") == 0
    assert browser.js("return document.scripts.length") == 1 + plots
    # the names are readable as written: in the page text ...
    body = browser.js("return document.body.innerText")
    assert hostile.IMG in body   # the directory's name, in the subject line
    if page != "bad_timeline":   # the tables' kernel names and phases
        assert hostile.SCRIPT in body and hostile.VISIBLE["bidi"] in body and hostile.VISIBLE["quotes"] in body
    # ... and in the hover label of each hostile kernel on the timeline, still without running
    if timeline is None:
        return
    plot = r.plots[timeline]["id"]
    for key, visible in hostile.VISIBLE.items():
        point = browser.find_point(plot, "compute", esc(visible))
        assert point is not None, key
        label = browser.hover_text(plot, *point)
        assert visible in label, (key, label)
    assert browser.js("return typeof window.__pwned") == "undefined"
    assert browser.js("return document.querySelectorAll('img').length") == 0
