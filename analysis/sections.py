"""The section model: what a report or diff says, independent of how it is drawn.

A document (``Document``) is a title, its warnings and a list of ``Section``s; a section is a
title and a list of blocks, each a ``Para`` (a sentence or a line of facts), a ``Facts`` list
(label: text pairs) or a ``Table`` (cells already formatted as text). The builders in
``report_sections`` and ``diff_sections`` turn the report and diff dicts into a ``Document``;
the text, markdown and HTML renderers only draw it, so every format says the same thing.

Cells and texts hold names taken from traces (kernels, annotations, paths): hostile input. The
model keeps them as they are; each renderer escapes for its own medium (``safe_text`` for the
terminal and markdown, HTML escaping in the HTML renderer).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field


@dataclass
class Para:
    """One paragraph or line. ``kind``: ``text``, ``note`` (secondary) or ``warning``."""

    text: str
    kind: str = "text"


@dataclass
class Facts:
    """Labelled one-line facts (``overlap: 92% of comm time ...``)."""

    items: list[tuple[str, str]]


@dataclass
class Table:
    """A table. ``header`` is the first row; ``right`` the columns aligned right (numbers);
    ``code`` the columns holding names from the trace (set in a code span where that helps)."""

    header: list[str]
    rows: list[list[str]]
    right: frozenset[int] = frozenset()
    code: frozenset[int] = frozenset()
    caption: str | None = None
    more: str | None = None      # a line saying what was left out ("... 3 more steps")
    notes: dict[int, list[str]] = field(default_factory=dict)  # row index (in rows) -> notes


Block = Para | Facts | Table


@dataclass
class Section:
    """A titled part of a document. ``key`` names it for renderers that add figures (html);
    ``level`` 1 is a top-level part, 2 a part of one (rank, device) entry."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 1


@dataclass
class Document:
    """What a renderer draws: a title line, warnings first, then the sections in order."""

    kind: str                    # "report" or "diff"
    title: str
    subject: str                 # the path(s) the document is about
    warnings: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


# Characters that would move the cursor, reorder a line (bidi overrides and isolates) or end a
# table row when printed raw: shown as a visible escape instead.
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_text(text) -> str:
    """``text`` with control characters and bidi controls replaced by ``\\xNN``/``\\uNNNN``
    escapes, so a name from a trace prints on one line, in reading order, as written."""
    s = "" if text is None else str(text)
    if s.isprintable() and not (_BIDI & set(s)):
        return s
    out = []
    for ch in s:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
