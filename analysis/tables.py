"""Plain-text and GitHub-markdown tables, shared by the report, diff and run-comparison renderers."""

from __future__ import annotations


def text_table(rows: list[list[str]], right: set[int], indent: str = "") -> list[str]:
    """Rows of cells padded to column width; columns in ``right`` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(r, widths)))).rstrip() for r in rows]


def md_escape(text) -> str:
    """A cell's text with the characters that would break a markdown table row escaped."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[list[str]], right: set[int]) -> list[str]:
    """A GitHub table: the first row is the header; columns in ``right`` are right-aligned."""
    head = "| " + " | ".join(md_escape(c) for c in rows[0]) + " |"
    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(rows[0]))) + "|"
    return [head, rule] + ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows[1:]]
