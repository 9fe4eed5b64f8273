"""render_html draws a hand-built Document: every block, figures where their key says, names inert."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from speedtrace.analysis.render_html import render_html
from speedtrace.analysis.sections import Document, Facts, Para, Section, Table

HOSTILE = [
    "<img src=x onerror=window.__pwned=1>",
    "</script><script>window.__pwned=1</script>",
    'kern"el\' onmouseover="window.__pwned=1',
    "line1\nline2_kernel",
    "abc\u202edcba_kernel",
]


class Tags(HTMLParser):
    """Start tags in order, with their attributes; the text of each <script> and of the body."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parse(html: str) -> Tags:
    p = Tags()
    p.feed(html)
    return p


def doc(names=("gemm",), warnings=()) -> Document:
    return Document(
        kind="report", title="speedtrace report", subject="/runs/x",
        warnings=list(warnings),
        sections=[
            Section("run", "Run", [Para("five steps"), Para("a side remark", kind="note")]),
            Section("entry", "rank 0 · device 0", [Facts([("compute", "12.5 ms"), ("idle", "3.0 ms")])],
                    level=2),
            Section("kernels", "Top kernels", [Table(
                header=["kernel", "count", "time µs"],
                rows=[[n, "3", "1,204"] for n in names],
                right=frozenset({1, 2}), code=frozenset({0}), caption="by time", more="... 4 more")]),
            Section("entry", "rank 1 · device 0", [Facts([("compute", "11.0 ms")])], level=2),
        ])


def test_every_block_is_drawn_with_its_styling():
    out = render_html(doc(warnings=["dilation 1.2: idle time is partly the profiler's"]))
    p = parse(out)
    tags = [t for t, _ in p.tags]
    assert tags.count("section") == 4 and tags.count("h2") == 2 and tags.count("h3") == 2
    # Facts: a definition list; Para(kind=note) gets its class.
    assert tags.count("dt") == 3
    assert ("p", {"class": "note"}) in p.tags
    # Table: numbers right-aligned (header and cells), names in the code style, caption, "more".
    th = [a for t, a in p.tags if t == "th"]
    assert th == [{}, {"class": "r"}, {"class": "r"}]
    td = [a for t, a in p.tags if t == "td"]
    assert td == [{"class": "code"}, {"class": "r"}, {"class": "r"}]
    text = "".join(p.text)
    assert "by time" in text and "... 4 more" in text and "1,204" in text and "12.5 ms" in text


def test_warnings_come_before_every_section_and_are_styled():
    out = render_html(doc(warnings=["first warning", "second\nwarning"]))
    assert out.index("first warning") < out.index('<section id="s0"')
    p = parse(out)
    warns = [a for t, a in p.tags if t == "div" and a.get("class") == "warning"]
    assert len(warns) == 2
    # A warning's own line break is kept as a line break.
    assert "second<br>warning" in out


def test_table_of_contents_links_every_titled_section():
    d = doc()
    d.sections.insert(0, Section("run", "", [Para("run: 5 profiled steps")]))
    out = render_html(d)
    p = parse(out)
    hrefs = [a["href"] for t, a in p.tags if t == "a"]
    ids = [a["id"] for t, a in p.tags if t == "section"]
    # the untitled first section has no heading and no entry in the contents
    assert len(ids) == 5 and len(set(ids)) == 5
    assert hrefs == ["#" + i for i in ids[1:]]
    assert "run: 5 profiled steps" in out
    assert [t for t, _ in p.tags].count("h2") == 2


def test_row_notes_go_under_their_row_across_the_table():
    d = doc(names=["fused_kernel", "other_kernel"])
    d.sections[2].blocks[0].notes = {0: ["absorbed: aten::lerp (4)", "renamed from fused_0"]}
    out = render_html(d)
    rows = out.split("<tr")
    i = next(k for k, r in enumerate(rows) if "fused_kernel" in r)
    assert "absorbed: aten::lerp (4)" in rows[i + 1] and "renamed from fused_0" in rows[i + 2]
    assert "other_kernel" in rows[i + 3]
    assert 'colspan="3"' in rows[i + 1]


def _figure(name: str):
    go = pytest.importorskip("plotly.graph_objects")
    return go.Figure(go.Bar(x=[name], y=[1]), layout={"title": {"text": name}})


def test_figures_go_after_the_first_section_with_their_key():
    figures = {"entry": [_figure("F_entry")], "": [_figure("F_top")], "kernels": [_figure("F_k")],
               "nowhere": [_figure("F_lost")]}
    out = render_html(doc(), figures)
    sections = [out.index(f'<section id="s{i}"') for i in range(4)]
    pos = {name: out.index(f'"{name}"') for name in ("F_top", "F_entry", "F_k", "F_lost")}
    assert pos["F_top"] < sections[0]
    # the first "entry" section (s1) gets it, not the second one (s3)
    assert sections[1] < pos["F_entry"] < sections[2]
    assert sections[2] < pos["F_k"] < sections[3]
    # a key that names no section still shows its figure, after every section
    assert pos["F_lost"] > sections[3] and "More figures" in out
    p = parse(out)
    plot_ids = [a["id"] for t, a in p.tags if t == "div" and a.get("class") == "plot"]
    assert len(plot_ids) == 4 and len(set(plot_ids)) == 4
    # plotly.js is inlined once, because there are figures
    assert out.count("Plotly.newPlot(") == 4 and len(out) > 1_000_000


def test_without_figures_no_plotly_is_inlined():
    out = render_html(doc())
    assert "Plotly" not in out and len(out) < 20_000


def test_the_page_forbids_network_requests():
    p = parse(render_html(doc()))
    csp = [a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0]
    assert "http:" not in csp[0] and "https:" not in csp[0]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_inert_and_readable(name):
    d = doc(names=[name], warnings=[f"odd file {name}"])
    d.title = f"report {name}"
    d.subject = name
    d.sections[0].title = name
    d.sections[1].blocks.append(Facts([(name, name)]))
    out = render_html(d)
    p = parse(out)
    tags = [t for t, _ in p.tags]
    # nothing injected: no image, no script (no figures here), no event-handler attribute
    assert "img" not in tags and "script" not in tags
    assert not any(k.startswith("on") for _, a in p.tags for k in a)
    text = "".join(p.text)
    visible = name.replace("\n", "\\x0a").replace("\u202e", "\\u202e")
    # shown as written (control and bidi characters as visible escapes) in the cell, the title,
    # the subject, the facts and the table of contents
    assert text.count(visible) >= 6
    assert "\u202e" not in out
    if "\n" in name:
        # a newline inside a name never becomes a second line of a table cell
        cells = [c for c in out.split("<td") if "line1" in c]
        assert cells and all("line2" in c.split("</td>")[0] for c in cells)
