"""Interval arithmetic against a brute-force reference on an integer grid.

Intervals have integer endpoints in [0, GRID]; a set is then exactly a boolean vector over the
unit cells [i, i+1), so every length is a count of cells, computed independently of the code.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speedtrace.analysis import intervals as iv

GRID = 40


@st.composite
def interval_lists(draw, max_size=8):
    n = draw(st.integers(0, max_size))
    starts = draw(st.lists(st.integers(0, GRID), min_size=n, max_size=n))
    lens = draw(st.lists(st.integers(-2, 15), min_size=n, max_size=n))  # <= 0: empty interval
    return np.array(starts, float), np.array(starts, float) + np.array(lens, float)


def cells(starts, ends):
    """Reference: the set as a boolean vector of unit cells."""
    m = np.zeros(GRID + 20, bool)
    for s, e in zip(starts, ends):
        if e > s:
            m[int(s):int(e)] = True
    return m


def as_cells(u):
    s, e = u
    # A union must be sorted, disjoint, non-touching and of positive length.
    assert np.all(e > s)
    assert np.all(s[1:] > e[:-1])
    return cells(s, e)


@settings(max_examples=150, deadline=None)
@given(interval_lists(), interval_lists())
def test_set_operations_match_grid(a, b):
    ua, ub = iv.union(*a), iv.union(*b)
    ca, cb = cells(*a), cells(*b)
    assert np.array_equal(as_cells(ua), ca)
    assert np.array_equal(as_cells(iv.intersect(ua, ub)), ca & cb)
    assert np.array_equal(as_cells(iv.subtract(ua, ub)), ca & ~cb)
    assert np.array_equal(as_cells(iv.merge(ua, ub)), ca | cb)
    assert iv.length(ua) == ca.sum()
    # inclusion-exclusion
    assert iv.length(iv.merge(ua, ub)) == iv.length(ua) + iv.length(ub) - iv.length(iv.intersect(ua, ub))
    # idempotence
    again = iv.union(*ua)
    assert np.array_equal(again[0], ua[0]) and np.array_equal(again[1], ua[1])


@settings(max_examples=100, deadline=None)
@given(interval_lists(), st.integers(0, 20), st.integers(0, 40))
def test_complement_within_span(a, lo, width):
    hi = lo + width
    gaps = iv.complement(iv.union(*a), lo, hi)
    ref = ~cells(*a)
    ref[:lo] = False
    ref[hi:] = False
    assert np.array_equal(as_cells(gaps), ref)


@settings(max_examples=100, deadline=None)
@given(interval_lists(), st.lists(st.integers(1, 3), min_size=8, max_size=8))
def test_step_function_matches_grid(a, w):
    s, e = a
    w = np.array(w[: len(s)], float)
    x, f = iv.step_function(s, e, w)
    ref = np.zeros(GRID + 20)
    for si, ei, wi in zip(s, e, w):
        if ei > si:
            ref[int(si):int(ei)] += wi
    assert iv.integral(x, np.minimum(f, 1.0)) == np.minimum(ref, 1.0).sum()
    assert iv.integral(x, f) == ref.sum()
    assert np.array_equal(as_cells(iv.where(x, f >= 2)), ref >= 2)


@settings(max_examples=100, deadline=None)
@given(interval_lists(), interval_lists())
def test_overlap_each_matches_grid(a, q):
    u = iv.union(*a)
    got = iv.overlap_each(q[0], q[1], u)
    ca = cells(*a)
    ref = [(cells([s], [e]) & ca).sum() for s, e in zip(*q)]
    assert list(got) == ref


@settings(max_examples=150, deadline=None)
@given(interval_lists(), interval_lists(), interval_lists())
def test_breakdown_identity(compute, comm, memory):
    """compute + exposed_comm + exposed_memory + idle = span for any event sets."""
    c, m, mem = iv.union(*compute), iv.union(*comm), iv.union(*memory)
    busy = iv.merge(iv.merge(c, m), mem)
    if len(busy[0]) == 0:
        return
    span = busy[1][-1] - busy[0][0]
    exposed_comm = iv.length(m) - iv.length(iv.intersect(m, c))
    exposed_memory = iv.length(iv.subtract(mem, iv.merge(c, m)))
    idle = span - iv.length(busy)
    assert iv.length(c) + exposed_comm + exposed_memory + idle == span
    assert idle == iv.length(iv.complement(busy, busy[0][0], busy[1][-1]))


def test_fractional_times_near_5e12_keep_nanoseconds():
    base = 5.052077e12
    u = iv.union([base + 0.001, base + 0.5], [base + 0.5, base + 1.25])
    assert len(u[0]) == 1
    assert iv.length(u) == pytest.approx(1.249, abs=2e-3)  # 1 ns steps survive at 5e12 µs
    gap = iv.complement(iv.union([base, base + 2.0], [base + 1.0, base + 3.0]), base, base + 3.0)
    assert iv.length(gap) == pytest.approx(1.0, abs=1e-3)


def test_touching_and_empty_inputs():
    assert iv.length(iv.union([], [])) == 0
    u = iv.union([0, 1, 5], [1, 2, 5])  # touching merge; zero-length vanishes
    assert u[0].tolist() == [0.0] and u[1].tolist() == [2.0]
    assert iv.length(iv.complement(iv.empty(), 0, 3)) == 3
    assert iv.length(iv.complement(u, 3, 3)) == 0
