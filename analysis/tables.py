"""Plain-text tables (the text renderer and compare-runs) and markdown cell escaping (compare-runs)."""

from __future__ import annotations


def text_table(rows: list[list[str]], right: set[int], indent: str = "") -> list[str]:
    """Rows of cells padded to column width; columns in ``right`` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(r, widths)))).rstrip() for r in rows]


def md_escape(text) -> str:
    """A cell's text with the characters that would break a markdown table row escaped."""
    return str(text).replace("|", "\\|").replace("\n", " ")
