"""Draw a ``Document`` (analysis/sections.py) as one self-contained HTML page.

The same sections the text and markdown renderers print, with figures placed beside the section
they illustrate. The page itself (plotly.js inline, no network) comes from ``html_page.page``.

Every string from the document is hostile input (kernel, annotation and file names): each is
HTML-escaped, and control and bidi characters are shown as visible escapes (``safe_text``) so a
name cannot break a line, reorder the text around it, or pose as another name.
"""

from __future__ import annotations

from speedtrace.analysis.html_page import esc, figure_html, page
from speedtrace.analysis.sections import Document, Facts, Para, Section, Table, safe_text

# Paragraph kinds with their own style; any other kind is drawn as plain text.
_PARA_CLASS = {"note": "note", "warning": "warning"}
_RIGHT = ' class="r"'


def _one_line(text) -> str:
    """A name or cell: escaped, control and bidi characters made visible."""
    return esc(safe_text(text))


def _lines(text) -> str:
    """A paragraph or warning that may span lines: each line as ``_one_line``, joined by <br>."""
    s = "" if text is None else str(text)
    return "<br>".join(_one_line(line) for line in s.split("\n"))


def _para(p: Para) -> str:
    cls = _PARA_CLASS.get(p.kind)
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{_lines(p.text)}</p>"


def _facts(f: Facts) -> str:
    items = "".join(f"<dt>{_one_line(label)}</dt><dd>{_one_line(value)}</dd>" for label, value in f.items)
    return f'<dl class="facts">{items}</dl>'


def _cell(tag: str, text, col: int, t: Table) -> str:
    classes = [c for c, on in (("r", col in t.right), ("code", col in t.code)) if on]
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<{tag}{attr}>{_one_line(text)}</{tag}>"


def _table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_one_line(t.caption)}</caption>")
    # Header cells take only the alignment of their column: a header is never a trace name.
    head = "".join(f'<th{_RIGHT if i in t.right else ""}>{_one_line(h)}</th>'
                   for i, h in enumerate(t.header))
    out.append(f"<thead><tr>{head}</tr></thead><tbody>")
    width = max([len(t.header)] + [len(r) for r in t.rows])
    for i, row in enumerate(t.rows):
        out.append("<tr>" + "".join(_cell("td", c, j, t) for j, c in enumerate(row)) + "</tr>")
        # a row's notes (what a kernel absorbed, what it was renamed from): under it, full width
        for note in t.notes.get(i, []):
            out.append(f'<tr class="rownote"><td colspan="{width}">{_one_line(note)}</td></tr>')
    out.append("</tbody></table>")
    if t.more:
        out.append(f'<p class="note">{_one_line(t.more)}</p>')
    return "".join(out)


def _block(b) -> str:
    if isinstance(b, Para):
        return _para(b)
    if isinstance(b, Facts):
        return _facts(b)
    if isinstance(b, Table):
        return _table(b)
    raise TypeError(f"not a section block: {type(b).__name__}")


class _Figures:
    """Numbers the figures of a page (div ids must be unique) and draws groups of them."""

    def __init__(self):
        self.count = 0

    def html(self, figs) -> str:
        parts = []
        for fig in figs or ():
            if fig is None:
                continue
            self.count += 1
            parts.append(figure_html(fig, f"fig-{self.count}"))
        return f'<div class="figs">{"".join(parts)}</div>\n' if parts else ""


def _placement(doc: Document, figures: dict) -> tuple[dict[int, list], list, list]:
    """Which figures go after which section (by index): the first section whose key matches.
    Returns (index -> figures, figures before the first section, figures matching no section)."""
    first_index: dict[str, int] = {}
    for i, s in enumerate(doc.sections):
        first_index.setdefault(s.key, i)
    after: dict[int, list] = {}
    before, unplaced = [], []
    for key, figs in figures.items():
        if key == "":
            before.extend(figs)
        elif key in first_index:
            after.setdefault(first_index[key], []).extend(figs)
        else:
            unplaced.extend(figs)
    return after, before, unplaced


def _toc(doc: Document) -> str:
    links = []
    for i, s in enumerate(doc.sections):
        if not s.title:
            continue
        cls = ' class="sub"' if s.level > 1 else ""
        links.append(f'<a{cls} href="#s{i}">{_one_line(s.title)}</a>')
    return f'<nav class="toc">{" · ".join(links)}</nav>' if links else ""


def _section(i: int, s: Section) -> str:
    tag = "h2" if s.level <= 1 else "h3"
    body = "\n".join(_block(b) for b in s.blocks)
    # an untitled section (the run line, a note) is its blocks alone
    head = f"<{tag}>{_one_line(s.title)}</{tag}>\n" if s.title else ""
    return f'<section id="s{i}" class="level{s.level}">\n{head}{body}\n'


def render_html(doc: Document, figures: dict[str, list] | None = None) -> str:
    """The whole page for ``doc``: title, subject, warnings, a table of contents, then every
    section with its blocks. ``figures`` maps a section key to plotly figures drawn at the end of
    the first section with that key (key ``""``: before the first section); figures whose key
    names no section are drawn at the end, so none is lost."""
    figures = figures or {}
    after, before, unplaced = _placement(doc, figures)
    figs = _Figures()
    parts = [f"<h1>{_one_line(doc.title)}</h1>"]
    if doc.subject:
        parts.append(f'<div class="subject">{_one_line(doc.subject)}</div>')
    if doc.warnings:
        parts.append('<div class="warnings">'
                     + "".join(f'<div class="warning">{_lines(w)}</div>' for w in doc.warnings)
                     + "</div>")
    parts.append(_toc(doc))
    parts.append(figs.html(before))
    for i, s in enumerate(doc.sections):
        parts.append(_section(i, s) + figs.html(after.get(i)) + "</section>")
    if unplaced:
        parts.append('<section id="more-figures"><h2>More figures</h2>' + figs.html(unplaced)
                     + "</section>")
    title = doc.title if not doc.subject else f"{doc.title} · {doc.subject}"
    return page(safe_text(title), "\n".join(p for p in parts if p), with_plotly=figs.count > 0)
