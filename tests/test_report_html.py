"""`speedtrace report|diff --format html -o FILE`: one offline page that says everything the text
says, with the figures beside their sections; the bundled sample's page within its size and time."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser

import pytest

from speedtrace import samples
from speedtrace.analysis.html_page import esc
from speedtrace.analysis.sections import Facts, Para, Table, safe_text
from speedtrace.cli import main

pytest.importorskip("plotly")


class Page(HTMLParser):
    """Sections (by id) with the plot divs inside each, and the figure specs in order."""

    def __init__(self):
        super().__init__()
        self.section = None
        self.plots: dict[str | None, list[str]] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.section = a.get("id")
        if tag == "div" and a.get("class") == "plot":
            self.plots.setdefault(self.section, []).append(a["id"])


def figure_titles(html: str) -> list[str]:
    """The title of each figure, in page order, from the JSON inlined for plotly."""
    out = []
    for spec in re.findall(r"<script>\(function\(\)\{var f=(\{.*?\});Plotly\.newPlot\(", html, flags=re.S):
        title = json.loads(spec)["layout"].get("title") or {}
        out.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return out


def section_keys(doc) -> dict[str, str]:
    """Section id in the page (s0, s1, ...) -> the section's key."""
    return {f"s{i}": s.key for i, s in enumerate(doc.sections)}


def cli(*argv) -> int:
    return main(list(argv))


def test_html_needs_an_output_file(capsys):
    assert cli("report", "--format", "html") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o FILE" in err
    assert cli("diff", "a", "b", "--format", "html") == 2


def test_an_unwritable_output_is_one_line_naming_it(tmp_path, capsys):
    target = tmp_path / "no-such-dir" / "r.html"
    assert cli("report", "--format", "html", "-o", str(target)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(target) in err and "Traceback" not in err
    assert not target.exists()


def test_output_file_for_text_is_what_stdout_would_show(tmp_path, capsys):
    assert cli("report", "--sample", "h200-speedrun") == 0
    stdout = capsys.readouterr().out
    out = tmp_path / "r.txt"
    assert cli("report", "--sample", "h200-speedrun", "-o", str(out)) == 0
    assert out.read_text(encoding="utf-8") == stdout
    assert str(out) in capsys.readouterr().err


def _document_strings(doc) -> list[str]:
    """Every string a reader sees in the text form of ``doc``."""
    out = [doc.title, doc.subject, *doc.warnings]
    for s in doc.sections:
        out.append(s.title)
        for b in s.blocks:
            if isinstance(b, Para):
                out.append(b.text)
            elif isinstance(b, Facts):
                out += [x for kv in b.items for x in kv]
            elif isinstance(b, Table):
                out += b.header + [c for r in b.rows for c in r] + [b.caption or "", b.more or ""]
                out += [n for notes in b.notes.values() for n in notes]
    return [x for x in out if x]


def test_bundled_report_page_says_everything_the_text_says(tmp_path):
    from speedtrace.analysis.load import load
    from speedtrace.analysis.report import build_report
    from speedtrace.analysis.report_sections import report_sections

    out = tmp_path / "report.html"
    t0 = time.process_time()
    assert cli("report", "--format", "html", "-o", str(out)) == 0
    cpu_s = time.process_time() - t0
    html = out.read_text(encoding="utf-8")
    # The bundled sample's page: at most 15 MB, built in at most 10 s of CPU time.
    assert len(html.encode()) <= 15_000_000
    assert cpu_s <= 10, cpu_s

    doc = report_sections(build_report(load(samples.sample_path()), top=10, min_gap_us=5.0))
    missing = [s for s in _document_strings(doc) if esc(safe_text(s)) not in html]
    assert not missing, missing[:5]

    page = Page()
    page.feed(html)
    keys = section_keys(doc)
    placed = {keys[sid]: ids for sid, ids in page.plots.items() if sid in keys}
    # No comm on this single-GPU sample: breakdown beside the entry (no overlap chart), the
    # timeline of one step beside the steps, gaps and kernels beside theirs.
    assert {k: len(v) for k, v in placed.items()} == {"entry": 1, "steps": 1, "gaps": 1, "kernels": 1}
    titles = figure_titles(html)
    assert len(titles) == 4
    first = doc_first_step(doc)
    assert f"step {first}" in titles[1]


def doc_first_step(doc) -> int:
    steps = next(s for s in doc.sections if s.key == "steps")
    return int(steps.blocks[0].rows[0][0])


def test_a_report_with_comm_adds_the_overlap_chart(tmp_path):
    out = tmp_path / "nccl.html"
    assert cli("report", "--sample", "nccl-a100", "--format", "html", "-o", str(out)) == 0
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    # the first (rank, device) entry is the first level-1 section with figures: breakdown and overlap
    counts = [len(v) for v in page.plots.values()]
    assert counts == [2, 1, 1, 1]


def test_report_page_follows_steps_option(tmp_path):
    out = tmp_path / "r.html"
    assert cli("report", "--format", "html", "--steps", "64-65", "-o", str(out)) == 0
    titles = figure_titles(out.read_text(encoding="utf-8"))
    assert any("step 64" in t for t in titles)


def test_diff_page_puts_each_figure_beside_its_section(tmp_path):
    from speedtrace.analysis.diff import build_diff
    from speedtrace.analysis.diff_sections import diff_sections
    from speedtrace.analysis.load import load

    before, after = samples.sample_path("h200-parent"), samples.sample_path("h200-record")
    out = tmp_path / "diff.html"
    assert cli("diff", str(before), str(after), "--format", "html", "-o", str(out)) == 0
    html = out.read_text(encoding="utf-8")
    assert len(html.encode()) <= 15_000_000

    doc = diff_sections(build_diff(load(before), load(after), min_gap_us=5.0))
    missing = [s for s in _document_strings(doc) if esc(safe_text(s)) not in html]
    assert not missing, missing[:5]
    page = Page()
    page.feed(html)
    keys = section_keys(doc)
    placed = {keys[sid]: len(ids) for sid, ids in page.plots.items() if sid in keys}
    assert placed == {"metrics": 1, "kernels": 1, "select_backward": 1, "gaps": 1, "verdict": 1}
    # the aligned timelines: one step of each side (the two samples share no step number)
    assert "before vs after, step" in figure_titles(html)[-1]


def test_many_ranks_put_the_summary_charts_beside_the_rank_table(tmp_path):
    from speedtrace.analysis.load import load
    from speedtrace.analysis.report import build_report
    from speedtrace.analysis.report_sections import report_sections

    out = tmp_path / "h8.html"
    assert cli("report", "--sample", "h100x8-normuon", "--format", "html", "-o", str(out)) == 0
    html = out.read_text(encoding="utf-8")
    assert len(html.encode()) <= 15_000_000
    doc = report_sections(build_report(load(samples.sample_path("h100x8-normuon"), progress=None),
                                       top=10, min_gap_us=5.0))
    page = Page()
    page.feed(html)
    keys = section_keys(doc)
    placed = {keys[sid]: len(ids) for sid, ids in page.plots.items() if sid in keys}
    # eight ranks with NCCL: breakdown and overlap beside the per-rank table; one step's timeline
    assert placed == {"ranks": 2, "steps": 1, "gaps": 1, "kernels": 1}
    missing = [s for s in _document_strings(doc) if esc(safe_text(s)) not in html]
    assert not missing, missing[:5]


def test_rank_option_limits_the_charts_to_that_rank(tmp_path):
    out = tmp_path / "r3.html"
    assert cli("report", "--sample", "h100x8-normuon", "--rank", "3", "--format", "html", "-o", str(out)) == 0
    specs = [json.loads(s) for s in re.findall(
        r"<script>\(function\(\)\{var f=(\{.*?\});Plotly\.newPlot\(", out.read_text(encoding="utf-8"), flags=re.S)]
    text = json.dumps([s["data"] for s in specs]) + json.dumps([s["layout"] for s in specs])
    assert "rank 3" in text
    assert not [r for r in range(8) if r != 3 and f"rank {r}" in text]
