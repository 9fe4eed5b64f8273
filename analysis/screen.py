"""Which decoded events to trust: the rules that exclude an event, each announced by a warning.

A trace can hold events that no analysis should count: a time that is missing, not a number,
negative or absurd; a GPU event without a device; an event written twice. Counting them gives
numbers that look right and are not (a kernel at 2**70 µs makes a span of 1e21 µs), so they are
left out, and each rule that left something out says so once per file, with the count.

``screen`` runs on a rank's columns before times are made relative, so that an absurd timestamp
never becomes the origin. The rules are metrics.md "Input"; an event is counted under the first
rule it breaks, in this order:

1. ``ts`` and ``dur`` are finite JSON numbers (the decoder stores NaN for a value that is missing
   or of another type: null, a string, a boolean).
2. ``dur`` is not negative.
3. A GPU event's ``pid`` (its device) is an integer >= 0.
4. The event lies inside the trace's window (``window``).
5. It is not an exact copy of an earlier event: every column the loader keeps is equal, and so
   are the extra args (``RankTrace.event_args``) the ``extra`` column points to.
"""

from __future__ import annotations

import numpy as np

from speedtrace.analysis.events import COLUMNS, Cat

# No clock reaches 2**53 µs (the year 2255 counted from 1970), and float64 no longer holds
# whole microseconds there: a time at or beyond it is absurd whatever the rest of the trace.
ABSURD_US = float(2**53)
# The trace's window is the median event start ± max(WIDEN × the half-width holding
# BULK_SHARE of the starts, MIN_HALF_WIDTH_US). The quantile ignores a few stray events on
# either side; the floor keeps a short trace's sparse events that are merely far apart (a
# checkpoint copy after a pause) however narrow its bulk is.
BULK_SHARE = 0.98
WIDEN = 10.0
MIN_HALF_WIDTH_US = 600e6  # 10 minutes

# Categories whose pid is a device number.
_DEVICE_CATS = (Cat.KERNEL, Cat.GPU_MEMCPY, Cat.GPU_MEMSET, Cat.GPU_USER_ANNOTATION)
_CAT_NAMES = {int(c): c.name.lower() for c in Cat}


def window(ts: np.ndarray, dur: np.ndarray) -> tuple[float, float] | None:
    """The trace's window as (middle, half-width), absolute µs; None when every event is absurd.

    From the events' starts alone (CPU and GPU share the profiler's clock), robust to a few
    strays: see ``BULK_SHARE``, ``WIDEN`` and ``MIN_HALF_WIDTH_US``.
    """
    ref = ts[(np.abs(ts) < ABSURD_US) & (np.abs(ts + dur) < ABSURD_US)]
    if len(ref) == 0:
        return None
    mid = float(np.median(ref))
    # method="lower": an actual distance, so one stray among few events cannot widen the bulk.
    half = float(np.quantile(np.abs(ref - mid), BULK_SHARE, method="lower"))
    return mid, max(WIDEN * half, MIN_HALF_WIDTH_US)


def duplicates(cols: dict[str, np.ndarray], rows: np.ndarray,
               event_args: list[dict] | None = None) -> np.ndarray:
    """Of ``rows`` (ascending), those that repeat an earlier row in every column (the ``extra``
    column compared by the content of the ``event_args`` entries it points to).

    Sorting by ``ts`` alone finds the few rows that share a start with another; only those are
    compared column by column, so a trace without duplicates costs one sort.
    """
    ts = cols["ts"][rows]
    order = np.argsort(ts, kind="stable")  # ties stay in file order
    st = ts[order]
    tie = st[1:] == st[:-1]
    if not tie.any():
        return rows[:0]
    twin = np.zeros(len(st), dtype=bool)
    twin[1:] = tie
    twin[:-1] |= tie
    cand = rows[order[twin]]
    # Compare float columns by their bits, so that NaN (missing) equals NaN.
    keys = [_content(cols[k][cand], event_args) if k == "extra" and event_args is not None
            else _bits(cols[k][cand]) for k in COLUMNS]
    o = np.lexsort(keys[::-1])  # stable: the first of equal rows is the earliest in the file
    same = np.ones(len(cand) - 1, dtype=bool)
    for k in keys:
        ks = k[o]
        same &= ks[1:] == ks[:-1]
    return np.sort(cand[o[1:][same]])


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64) if a.dtype == np.float64 else a


def _content(extra: np.ndarray, event_args: list[dict]) -> np.ndarray:
    """One number per distinct content of the args dicts that ``extra`` indexes (-1: none).
    Equal dicts get equal numbers though the loader gives each event with collective args a
    dict of its own."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(repr(sorted(event_args[k].items())) if k >= 0 else "", len(ids))
                     for k in extra.tolist()], dtype=np.int64)


def screen(cols: dict[str, np.ndarray], path: str,
           event_args: list[dict] | None = None) -> tuple[np.ndarray | None, list[str]]:
    """The rows to keep (None: all of them) and one warning per rule that excluded any.
    ``event_args``: what the ``extra`` column indexes (RankTrace.event_args)."""
    ts, dur, cat, pid = cols["ts"], cols["dur"], cols["cat"], cols["pid"]
    warnings: list[str] = []
    keep = np.isfinite(ts) & np.isfinite(dur)
    _tell(warnings, path, cat, ~keep,
          "whose ts or dur is missing or not a finite JSON number (null, a string, a boolean)",
          "excluded")
    bad = keep & (dur < 0)
    _tell(warnings, path, cat, bad, "with a negative dur", "excluded")
    keep &= ~bad
    bad = keep & np.isin(cat, _DEVICE_CATS) & (pid < 0)
    _tell(warnings, path, cat, bad,
          "on the GPU whose pid (the device) is not a non-negative integer", "skipped")
    keep &= ~bad
    if keep.any():
        win = window(ts[keep], dur[keep])
        bad = keep.copy()
        rule = "starting or ending at or beyond 2**53 µs (a time no clock reaches)"
        if win is not None:
            mid, half = win
            lo, hi = max(mid - half, -ABSURD_US), min(mid + half, ABSURD_US)
            bad &= (ts < lo) | (ts + dur > hi)
            rule = (f"starting or ending more than {half / 1e6:.4g} s from the median event start "
                    "(outside any plausible trace window)")
        _tell(warnings, path, cat, bad, rule, "excluded")
        keep &= ~bad
    rows = np.flatnonzero(keep)
    dup = duplicates(cols, rows, event_args)
    if len(dup):
        keep[dup] = False
        _tell(warnings, path, cat, ~keep & _mask(len(ts), dup),
              "identical in every field speedtrace reads to an earlier event", "counted once")
    return (None if keep.all() else keep), warnings


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def _tell(warnings: list[str], path: str, cat: np.ndarray, bad: np.ndarray, rule: str,
          done: str) -> None:
    """Add '<path>: N events <rule> were <done> (kernel 2, cpu_op 1)' when ``bad`` has any."""
    n = int(np.count_nonzero(bad))
    if not n:
        return
    counts = np.bincount(cat[bad], minlength=len(_CAT_NAMES))
    by_cat = ", ".join(f"{_CAT_NAMES[c]} {int(k)}" for c, k in enumerate(counts) if k)
    what = "event" if n == 1 else "events"
    verb = "was" if n == 1 else "were"
    if done == "counted once":
        warnings.append(f"{path}: {n} {what} {rule} {verb} dropped, so each is counted once ({by_cat})")
    else:
        warnings.append(f"{path}: {n} {what} {rule} {verb} {done} ({by_cat})")
