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
    assert main(["timeline", "--sample", "list", "-o", "unused.html"]) == 0
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
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "o.html").exists()
