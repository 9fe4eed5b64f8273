"""How numbers and names are written in every human-readable output (text, markdown, HTML).

One place, so that a report and a diff round and shorten alike. None, NaN and non-numbers are
written ``n/a``; times below a millisecond keep one decimal.
"""

from __future__ import annotations

import math
import numbers
import re

NAME_WIDTH = 60


def number(x) -> float | None:
    """A finite float (numpy numbers included), or None for null, NaN, text or booleans."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return float(x) if math.isfinite(x) else None


def number_list(xs) -> list[float]:
    if not isinstance(xs, (list, tuple)):
        return []
    return [v for v in (number(x) for x in xs) if v is not None]


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def us(x) -> str:
    v = number(x)
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"


def us1(x) -> str:
    """µs with one decimal and thousands separators (the diff's tables)."""
    v = number(x)
    return "n/a" if v is None else f"{v:,.1f}"


def ms(x_us) -> str:
    v = number(x_us)
    return "n/a" if v is None else f"{v / 1000:,.2f}"


def pct(x) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.1f}%"


def share(part, whole) -> str:
    p, w = number(part), number(whole)
    if p is None or not w:
        return "n/a"
    return f"{100 * p / w:.1f}%"


def num(x) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.2f}"


def count(n, noun: str) -> str:
    n = "n/a" if n is None else n
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def minus(text: str) -> str:
    """A typographic minus sign for negative numbers."""
    return text.replace("-", "\u2212")


# A kernel key's launch configuration, ``<<<grid, block>>>`` (kernels.config_text).
_CONFIG_SUFFIX = re.compile(r"<<<[0-9(), ?]+>>>$")


def _dims_text(dims) -> str:
    d = list(dims)
    while len(d) > 1 and d[-1] == 1:
        d.pop()
    return str(d[0]) if len(d) == 1 else "(" + ", ".join(map(str, d)) + ")"


def config_text(grid, block) -> str:
    """``<<<grid, block>>>`` for launch dimensions (tuples; an unknown one is ``?``), trailing
    1s dropped: ``<<<2358, 256>>>``, ``<<<(4, 8), 128>>>``."""
    g = _dims_text(grid) if grid else "?"
    b = _dims_text(block) if block else "?"
    return f"<<<{g}, {b}>>>"


def split_key(key: str) -> tuple[str, str]:
    """(name part, ``<<<grid, block>>>`` suffix or "") of a kernel key."""
    m = _CONFIG_SUFFIX.search(key)
    return (key[: m.start()], m.group(0)) if m else (key, "")


def short(name, width: int = NAME_WIDTH) -> str:
    """``name`` cut to ``width`` with "…"; a kernel key's ``<<<grid, block>>>`` is kept whole
    (the name before it is cut) where that leaves at least 12 characters of name."""
    name = "" if name is None else str(name)
    if len(name) <= width:
        return name
    base, config = split_key(name)
    if config and width - len(config) >= 12:
        return base[: width - len(config) - 1] + "…" + config
    return name[: width - 1] + "…"


def kernel_name(name, width: int = NAME_WIDTH) -> str:
    """A long C++ kernel name without ``void`` and with its call arguments folded, cut to
    ``width``: in ``void ns::kernel<cfg...>(args...)`` the name and template tell kernels apart.
    A launch configuration at the end (``<<<grid, block>>>``) is kept whole: the name is cut."""
    name = "" if name is None else str(name)
    if len(name) <= width:
        return name
    name, suffix = split_key(name)
    if suffix and width - len(suffix) >= 12:
        return kernel_name(name, width - len(suffix)) + suffix
    name += suffix
    if name.startswith("void "):
        name = name[5:]
    out, depth = [], 0
    for ch in name:
        if ch == "(":
            if depth == 0:
                out.append("(…")
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(")")
        elif depth == 0:
            out.append(ch)
    return short("".join(out), width)


def time_text(us: float | None) -> str:
    """µs below a millisecond, ms above (``1,611 µs`` is kept for hundreds of µs)."""
    if us is None:
        return "n/a"
    if abs(us) >= 10_000:
        return f"{us / 1000:,.1f} ms"
    if abs(us) >= 1000:
        return f"{us / 1000:,.2f} ms"
    return f"{us:,.0f} µs" if abs(us) >= 100 else f"{us:,.1f} µs"


def count_text(n) -> str:
    """A count, or a per-step mean count with one decimal."""
    if n is None:
        return "n/a"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:,.1f}"
