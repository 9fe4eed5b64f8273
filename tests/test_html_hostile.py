"""Hostile names in traces (kernels, annotations, CPU ops, the directory) render inert and
readable in every HTML output: the report, the diff and the timeline.

Inert: the page holds no element, attribute or script the names brought (parsed here; run in a
real browser by test_html_browser.py). Readable: each name is shown as written, with control and
bidi characters as visible escapes, in the tables and in the figures' text.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import hostile
import pytest

from speedtrace.analysis.html_page import esc, plotly_js
from speedtrace.cli import main

pytest.importorskip("plotly")

# What a payload would bring in if it were interpreted rather than shown (the figures' own
# markup, <b> and <br>, is theirs; the payloads' <b> wraps the word "bold").
MARKUP = re.compile(r"<\s*/?\s*(img|script)\b|<b>bold", re.I)


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def figure_specs(html: str) -> list[dict]:
    return [json.loads(s) for s in
            re.findall(r"<script>\(function\(\)\{var f=(\{.*?\});Plotly\.newPlot\(", html, flags=re.S)]


# Keys whose values plotly uses as identifiers and never draws.
NOT_DRAWN = {"legendgroup", "uid"}


def strings(obj):
    """Every string inside a JSON value that plotly may draw as text."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in NOT_DRAWN:
                yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


def check_inert(html: str) -> list[dict]:
    """The structural checks every hostile page must pass; returns the figure specs."""
    tags = Tags()
    tags.feed(html)
    names = [t for t, _ in tags.tags]
    assert "img" not in names
    specs = figure_specs(html)
    # one script for plotly.js, one per figure: none brought by a name
    assert names.count("script") == 1 + len(specs)
    assert not [k for _, a in tags.tags for k in a if k.startswith("on")]
    # no bidi override anywhere outside plotly.js, raw or in the figures' JSON
    assert "\u202e" not in html.replace(plotly_js(), "")
    texts = [s for spec in specs for s in strings(spec)]
    assert not [s for s in texts if "\u202e" in s]
    # figure text (hover, labels, titles): plotly reads a small HTML subset, so names arrive escaped
    carried = [s for s in texts if "__pwned" in s or "evil" in s]
    assert carried, "the hostile names are not in any figure"
    assert not [s for s in carried if MARKUP.search(s)], [s for s in carried if MARKUP.search(s)][:3]
    assert not [s for s in carried if "\n" in s or "\u202e" in s]
    return specs


def shown(html: str, key: str) -> bool:
    """The name ``key`` of hostile.KERNELS appears as written (escaped) in the page's HTML."""
    return esc(hostile.VISIBLE[key]) in html


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    before = hostile.build(hostile.hostile_dir(root, "before"))
    after = hostile.build(hostile.hostile_dir(root, "after"), step0=1, scale=1.5)
    return before, after


def test_report_html(hostile_set, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(hostile_set[0]), "--format", "html", "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    specs = check_inert(html)
    for key in hostile.KERNELS:
        assert shown(html, key), key
    # the directory name (a payload too) is the subject line and the title, escaped
    assert esc(str(hostile_set[0])) in html
    # the timeline carries each kernel name in its hover text
    timeline = next(s for s in specs if "timeline" in (s["layout"].get("title") or {}).get("text", "").lower())
    hover = " ".join(strings(timeline["data"]))
    for key in hostile.KERNELS:
        assert esc(hostile.VISIBLE[key]) in hover, key


def test_diff_html(hostile_set, tmp_path):
    out = tmp_path / "d.html"
    before, after = hostile_set
    assert main(["diff", str(before), str(after), "--format", "html", "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    check_inert(html)
    # the kernels changed by `scale`, so they are listed by name in the diff's kernel table
    for key in hostile.KERNELS:
        assert shown(html, key), key


def test_timeline_html(hostile_set, tmp_path):
    out = tmp_path / "t.html"
    assert main(["timeline", str(hostile_set[0]), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    specs = check_inert(html)
    assert len(specs) == 1
    hover = " ".join(strings(specs[0]["data"]))
    for key in hostile.KERNELS:
        assert esc(hostile.VISIBLE[key]) in hover, key
