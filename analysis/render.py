"""Plain text and GitHub markdown from a ``Document`` (analysis/sections.py).

Both renderers walk the same sections in the same order; they differ only in layout. Every
string that can come from a trace passes ``safe_text`` (control and bidi characters made
visible); markdown additionally escapes the characters that would end a table cell, start HTML
or break a code span.

Text layout: a top-level section is a blank line, ``title:``, paragraphs and facts indented by
two spaces and tables by four; a second-level section is ``  title:`` with everything under it
indented by four (or ``  title: text`` when a paragraph is all it holds). An untitled section
prints its paragraphs and tables flush left.
"""

from __future__ import annotations

import re

from speedtrace.analysis.sections import Document, Facts, Para, Section, Table, safe_text
from speedtrace.analysis.tables import text_table

# ------------------------------------------------------------------------------------ text


def _text_table(t: Table, indent: str) -> list[str]:
    rows = [[safe_text(c) for c in t.header]] + [[safe_text(c) for c in r] for r in t.rows]
    lines = text_table(rows, right=set(t.right), indent=indent)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        out += [f"{indent}    {safe_text(n)}" for n in t.notes.get(i - 1, [])]
    if t.more:
        out.append(f"{indent}{safe_text(t.more)}")
    return out


def _text_blocks(blocks, indent: str, table_indent: str) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Para):
            out += [f"{indent}{safe_text(b.text)}"] if b.text else []
        elif isinstance(b, Facts):
            out += [f"{indent}{safe_text(k)}: {safe_text(v)}" for k, v in b.items]
        elif isinstance(b, Table):
            out += _text_table(b, table_indent)
    return out


def _text_section(s: Section, first: bool) -> list[str]:
    if not s.title:
        return ([] if first else [""]) + _text_blocks(s.blocks, "", "")
    if s.level >= 2 and len(s.blocks) == 1 and isinstance(s.blocks[0], Para):
        return [f"  {safe_text(s.title)}: {safe_text(s.blocks[0].text)}"]
    if s.level >= 2:
        return [f"  {safe_text(s.title)}:"] + _text_blocks(s.blocks, "    ", "    ")
    return ["", f"{safe_text(s.title)}:"] + _text_blocks(s.blocks, "  ", "    ")


def render_text(doc: Document) -> str:
    """The document as plain text for a terminal: warnings first, then the sections."""
    lines = [f"{doc.title}: {safe_text(doc.subject)}" if doc.subject else doc.title]
    lines += [f"warning: {safe_text(w)}" for w in doc.warnings]
    for i, s in enumerate(doc.sections):
        lines += _text_section(s, first=i == 0)
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- markdown

_MD_SPECIAL = re.compile(r"([\\|*<>\[\]])")


def md_text(text) -> str:
    """Text for a markdown paragraph or table cell: one line, nothing interpreted."""
    return _MD_SPECIAL.sub(r"\\\1", safe_text(text))


def md_code(text) -> str:
    """A code span that shows ``text`` as written, backticks included (the fence is one
    backtick longer than the longest run inside); pipes escaped as GitHub tables need even
    inside code spans. HTML inside a code span is shown, not interpreted."""
    s = safe_text(text)
    if not s:
        return ""
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or longest else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def _md_cell(text, code: bool) -> str:
    if code and text not in ("", "-"):
        return md_code(text)
    return md_text(text)


def _md_table(t: Table) -> list[str]:
    header = list(t.header) + (["note"] if t.notes else [])
    rows = []
    for i, r in enumerate(t.rows):
        cells = [_md_cell(c, j in t.code) for j, c in enumerate(r)]
        if t.notes:
            cells.append("; ".join(md_text(n) for n in t.notes.get(i, [])))
        rows.append(cells)
    head = "| " + " | ".join(md_text(c) for c in header) + " |"
    rule = "|" + "|".join("---:" if i in t.right else "---" for i in range(len(header))) + "|"
    out = [head, rule] + ["| " + " | ".join(r) + " |" for r in rows]
    if t.more:
        out += ["", md_text(t.more)]
    return out


def _md_blocks(blocks) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Para):
            text = md_text(b.text)
            out += [f"_{text}_" if b.kind == "note" else f"> **warning:** {text}" if b.kind == "warning"
                    else text, ""]
        elif isinstance(b, Facts):
            out += [f"- **{md_text(k)}:** {md_text(v)}" for k, v in b.items] + [""]
        elif isinstance(b, Table):
            out += _md_table(b) + [""]
    return out


def render_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured markdown, for pull requests and issues."""
    title = f"# {doc.title}: {md_code(doc.subject)}" if doc.subject else f"# {doc.title}"
    out = [title, ""]
    if doc.warnings:
        out += [f"> **warning:** {md_text(w)}  " for w in doc.warnings] + [""]
    for s in doc.sections:
        if s.title:
            heading = safe_text(s.title)
            out += [f"{'#' * (s.level + 1)} {md_text(heading[:1].upper() + heading[1:])}", ""]
        out += _md_blocks(s.blocks)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def render(doc: Document, fmt: str) -> str:
    """``doc`` as ``text`` or ``md``."""
    return render_markdown(doc) if fmt == "md" else render_text(doc)
