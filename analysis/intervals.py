"""Interval arithmetic on half-open intervals ``[start, end)``, vectorised with numpy.

A *union* is a pair ``(starts, ends)`` of float64 arrays: sorted, disjoint, non-touching and of
positive length, as ``union`` returns it. Every set operation below takes and returns unions,
so lengths are exact sums of float64 differences and nothing is rounded to a grid.

The weighted sweep (``step_function``) turns many possibly overlapping intervals with weights
into a piecewise-constant function: the basis of "Σ b over running kernels" in metrics.md.
"""

from __future__ import annotations

import numpy as np

Union = tuple[np.ndarray, np.ndarray]

_EMPTY = np.empty(0, dtype=np.float64)


def empty() -> Union:
    """The empty union."""
    return _EMPTY, _EMPTY


def union(starts, ends) -> Union:
    """Merge intervals ``[starts[i], ends[i])`` into a union; empty and inverted ones vanish.

    Touching intervals merge: ``[0, 1) ∪ [1, 2)`` has no gap, so it is one maximal interval.
    """
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    keep = e > s  # also drops NaN
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return empty()
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    # A new interval begins where a start lies beyond everything seen so far.
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    return s[first], reach[last]


def length(u: Union) -> float:
    """Total length of a union."""
    return float(np.sum(u[1] - u[0]))


def step_function(starts, ends, weights):
    """The function f(t) = Σ weights[i] over intervals containing t, as (breakpoints, values).

    ``values[k]`` is f on ``[breakpoints[k], breakpoints[k+1])``; f is 0 outside. Integer
    weights give exact values (float64 sums of integers below 2**53).
    """
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), s.shape)
    keep = (e > s) & (w != 0)
    s, e, w = s[keep], e[keep], w[keep]
    if len(s) == 0:
        return _EMPTY, _EMPTY
    x = np.unique(np.concatenate([s, e]))
    delta = np.bincount(np.searchsorted(x, s), weights=w, minlength=len(x))
    delta -= np.bincount(np.searchsorted(x, e), weights=w, minlength=len(x))
    return x, np.cumsum(delta)[:-1]


def where(x: np.ndarray, mask: np.ndarray) -> Union:
    """The union of the segments ``[x[k], x[k+1])`` of a step function for which mask[k]."""
    if len(mask) == 0 or not mask.any():
        return empty()
    m = np.concatenate([[False], mask, [False]])
    edges = np.diff(m.astype(np.int8))
    return x[np.flatnonzero(edges == 1)], x[np.flatnonzero(edges == -1)]


def integral(x: np.ndarray, values: np.ndarray) -> float:
    """∫ f dt of a step function."""
    if len(values) == 0:
        return 0.0
    return float(np.sum(values * np.diff(x)))


def _count_where(unions: list[Union], keep) -> Union:
    """Points covered by a pattern of the given unions: weight 2**i for union i, keep(code)."""
    starts = [u[0] for u in unions]
    ends = [u[1] for u in unions]
    weights = [np.full(len(u[0]), float(2**i)) for i, u in enumerate(unions)]
    x, f = step_function(np.concatenate(starts), np.concatenate(ends), np.concatenate(weights))
    return where(x, keep(f.astype(np.int64)))


def intersect(a: Union, b: Union) -> Union:
    """a ∩ b."""
    return _count_where([a, b], lambda code: code == 3)


def subtract(a: Union, b: Union) -> Union:
    """a \\ b."""
    return _count_where([a, b], lambda code: code == 1)


def merge(a: Union, b: Union) -> Union:
    """a ∪ b."""
    return union(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))


def complement(a: Union, lo: float, hi: float) -> Union:
    """[lo, hi) \\ a: the gaps of a within a span."""
    if not hi > lo:
        return empty()
    return subtract(union([lo], [hi]), a)


def covered_before(u: Union, t) -> np.ndarray:
    """|u ∩ (-inf, t)| for each t (vectorised)."""
    s, e = u
    t = np.asarray(t, dtype=np.float64)
    if len(s) == 0:
        return np.zeros(t.shape)
    full = np.concatenate([[0.0], np.cumsum(e - s)])
    k = np.searchsorted(s, t, side="right")  # intervals starting at or before t
    partial = np.clip(t - s[np.maximum(k - 1, 0)], 0.0, (e - s)[np.maximum(k - 1, 0)])
    return np.where(k > 0, full[np.maximum(k - 1, 0)] + partial, 0.0)


def overlap_each(starts, ends, u: Union) -> np.ndarray:
    """|[starts[i], ends[i]) ∩ u| for each i: per-interval sums rather than a union."""
    s = np.asarray(starts, dtype=np.float64)
    e = np.maximum(np.asarray(ends, dtype=np.float64), s)
    return covered_before(u, e) - covered_before(u, s)
