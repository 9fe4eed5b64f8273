"""Links between events: GPU event -> launch -> enclosing CPU ranges, and step windows.

- ``launch_rows``: the runtime/driver call that launched each GPU event (same ``correlation``).
- ``Nesting``: the innermost interval containing a time, for many queries at once, over
  per-thread nested ranges (``cpu_op``, ``user_annotation``).
- ``step_windows``: which profiler step each GPU event belongs to (metrics.md "Steps").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from speedtrace.analysis.events import LAUNCH_CATS, Cat, EventTable, RankTrace
from speedtrace.profiling import runinfo

PROFILER_STEP = re.compile(r"^ProfilerStep#(\d+)$")
INDUCTOR_RANGE = re.compile(r"^## Call CompiledFxGraph \S+ ##$")


def launch_rows(ev: EventTable, rows: np.ndarray) -> np.ndarray:
    """Row of the runtime/driver launch of each GPU event in ``rows`` (-1 when none matches)."""
    rows = np.asarray(rows, dtype=np.int64)
    launches = np.flatnonzero(np.isin(ev.cat, LAUNCH_CATS) & (ev.correlation >= 0))
    out = np.full(len(rows), -1, dtype=np.int64)
    if len(launches) == 0 or len(rows) == 0:
        return out
    corr = ev.correlation[launches]
    order = np.argsort(corr, kind="stable")  # on duplicates, the first launch in file order
    corr, launches = corr[order], launches[order]
    want = ev.correlation[rows]
    k = np.minimum(np.searchsorted(corr, want), len(corr) - 1)
    hit = (want >= 0) & (corr[k] == want)
    out[hit] = launches[k[hit]]
    return out


def thread_keys(pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
    """One int per (pid, tid) pair, comparable across calls (pids and tids fit in 32 bits)."""
    return (np.asarray(pid, np.int64) << 32) ^ (np.asarray(tid, np.int64) & 0xFFFFFFFF)


class Nesting:
    """Ranges grouped by a key (a thread), nested within each group, for containment queries.

    Within a group the ranges are sorted by start (longer first on ties) and each gets a parent:
    the innermost earlier range still open at its start. The innermost range containing t is
    then the last range starting at or before t, or the first of its ancestors that still
    contains t. Ranges that overlap without nesting (rounding at the ns level) still get the
    open range as parent, and a query only ever returns a range that contains t.
    """

    def __init__(self, starts, ends, groups, ids):
        starts = np.asarray(starts, np.float64)
        ends = np.asarray(ends, np.float64)
        groups = np.asarray(groups, np.int64)
        order = np.lexsort((-ends, starts, groups))
        self.start, self.end = starts[order], ends[order]
        self.group = groups[order]
        self.id = np.asarray(ids, np.int64)[order]  # what a query returns (e.g. event rows)
        self.parent = self._parents()
        cut = np.flatnonzero(np.diff(self.group)) + 1
        bounds = np.concatenate([[0], cut, [len(self.group)]]) if len(self.group) else np.zeros(1, np.int64)
        self.bounds = {int(self.group[lo]): (int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])}

    def _parents(self) -> np.ndarray:
        # One pass with a stack; ranges are few compared with the queries (tens of thousands).
        parent = np.full(len(self.start), -1, dtype=np.int64)
        start, end, group = self.start.tolist(), self.end.tolist(), self.group.tolist()
        stack: list[int] = []
        prev_group = None
        for i in range(len(start)):
            if group[i] != prev_group:
                stack.clear()
                prev_group = group[i]
            while stack and end[stack[-1]] <= start[i]:
                stack.pop()
            if stack:
                parent[i] = stack[-1]
            stack.append(i)
        return parent

    def innermost(self, t, groups) -> np.ndarray:
        """Position (into this Nesting's sorted arrays) of the innermost range containing each t
        in its group, or -1."""
        t = np.asarray(t, np.float64)
        groups = np.asarray(groups, np.int64)
        pos = np.full(len(t), -1, dtype=np.int64)
        for g in np.unique(groups):
            b = self.bounds.get(int(g))
            if b is None:
                continue
            lo, hi = b
            sel = np.flatnonzero(groups == g)
            pos[sel] = lo + np.searchsorted(self.start[lo:hi], t[sel], side="right") - 1
            pos[sel[pos[sel] < lo]] = -1
        pending = pos >= 0
        pending[pending] = self.end[pos[pending]] <= t[pending]
        while pending.any():
            pos[pending] = self.parent[pos[pending]]
            pending = pos >= 0
            pending[pending] = self.end[pos[pending]] <= t[pending]
        pos[np.isnan(t)] = -1
        return pos

    def inherited(self, flag: np.ndarray) -> np.ndarray:
        """flag (by sorted position) OR-ed down the parent chain: a range or an ancestor has it."""
        out = np.asarray(flag, bool).copy()
        has_parent = self.parent >= 0
        while True:
            nxt = out.copy()
            nxt[has_parent] |= out[self.parent[has_parent]]
            if np.array_equal(nxt, out):
                return out
            out = nxt


def _range_nesting(ev: EventTable, mask: np.ndarray) -> Nesting:
    rows = np.flatnonzero(mask)
    return Nesting(ev.ts[rows], ev.ts[rows] + ev.dur[rows], thread_keys(ev.pid[rows], ev.tid[rows]), rows)


@dataclass
class CpuContext:
    """Innermost ``cpu_op`` and ``user_annotation`` around launches of one rank."""

    ev: EventTable
    ops: Nesting = field(init=False)
    annotations: Nesting = field(init=False)

    def __post_init__(self):
        ev = self.ev
        self.ops = _range_nesting(ev, ev.cat == Cat.CPU_OP)
        # ProfilerStep#N is a step window, not a phase: a launch under no other annotation has
        # no phase rather than the step as its phase. Inductor's "## Call CompiledFxGraph <hash> ##"
        # ranges are not phases either: they would hide the user's forward/backward/optimizer
        # ranges around them, and their hash changes with every code change.
        not_phase = np.array([bool(PROFILER_STEP.match(n) or INDUCTOR_RANGE.match(n)) for n in ev.names],
                             dtype=bool)
        skip = not_phase[ev.name] if len(ev.names) else np.zeros(len(ev), bool)
        self.annotations = _range_nesting(ev, (ev.cat == Cat.USER_ANNOTATION) & ~skip)

    def innermost_op(self, launch: np.ndarray) -> np.ndarray:
        """Row of the innermost ``cpu_op`` on the launch's thread containing its start (-1)."""
        return self._on_thread(self.ops, launch)

    def innermost_annotation(self, launch: np.ndarray) -> np.ndarray:
        """Row of the innermost ``user_annotation`` containing each launch's start: on the
        launching thread, else the innermost (latest-starting) one on any thread of its pid."""
        out = self._on_thread(self.annotations, launch)
        todo = np.flatnonzero((out < 0) & (launch >= 0))
        if len(todo) == 0 or len(self.annotations.id) == 0:
            return out
        ev, nest = self.ev, self.annotations
        rows = launch[todo]
        t = ev.ts[rows]
        best_start = np.full(len(todo), -np.inf)
        best_len = np.full(len(todo), np.inf)
        for key in nest.bounds:
            lo, _ = nest.bounds[key]
            pid_of_group = ev.pid[nest.id[lo]]
            sel = np.flatnonzero(ev.pid[rows] == pid_of_group)
            if len(sel) == 0:
                continue
            pos = nest.innermost(t[sel], np.full(len(sel), key))
            ok = pos >= 0
            s, sel, pos = sel[ok], sel[ok], pos[ok]
            st, ln = nest.start[pos], nest.end[pos] - nest.start[pos]
            better = (st > best_start[s]) | ((st == best_start[s]) & (ln < best_len[s]))
            s, pos = s[better], pos[better]
            best_start[s], best_len[s] = nest.start[pos], nest.end[pos] - nest.start[pos]
            out[todo[s]] = nest.id[pos]
        return out

    def _on_thread(self, nest: Nesting, launch: np.ndarray) -> np.ndarray:
        out = np.full(len(launch), -1, dtype=np.int64)
        has = np.flatnonzero(launch >= 0)
        if len(has) == 0 or len(nest.id) == 0:
            return out
        rows = launch[has]
        pos = nest.innermost(self.ev.ts[rows], thread_keys(self.ev.pid[rows], self.ev.tid[rows]))
        out[has[pos >= 0]] = nest.id[pos[pos >= 0]]
        return out

    def under_op_named(self, launch: np.ndarray, name: str) -> np.ndarray:
        """Whether a ``cpu_op`` named exactly ``name`` is open on the launch's thread at its start."""
        nest = self.ops
        out = np.zeros(len(launch), dtype=bool)
        if name not in self.ev.names or len(nest.id) == 0:
            return out
        code = self.ev.names.index(name)
        flag = nest.inherited(self.ev.name[nest.id] == code)
        has = np.flatnonzero(launch >= 0)
        rows = launch[has]
        pos = nest.innermost(self.ev.ts[rows], thread_keys(self.ev.pid[rows], self.ev.tid[rows]))
        out[has[pos >= 0]] = flag[pos[pos >= 0]]
        return out


# ------------------------------------------------------------------------------ steps

STEP_SOURCES = ("cpu_annotation", "gpu_annotation", "recorded", "none")


@dataclass
class StepWindows:
    """Per GPU event its step number (-1: in no step), and per step its wall time."""

    source: str
    step_of: np.ndarray                       # int64, one per GPU event given
    wall_us: dict[int, float | None]          # step -> CPU annotation duration (None: unknown)
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return sorted(self.wall_us)


def _named_steps(ev: EventTable, mask: np.ndarray):
    """(rows, step numbers) of events in mask named ProfilerStep#N."""
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return rows, rows
    number = np.full(len(ev.names), -1, dtype=np.int64)
    for code in np.unique(ev.name[rows]):
        m = PROFILER_STEP.match(ev.names[code])
        if m:
            number[code] = int(m.group(1))
    n = number[ev.name[rows]]
    return rows[n >= 0], n[n >= 0]


def _repeated_steps(path: str, pids: np.ndarray, numbers: np.ndarray, most: int = 5) -> list[str]:
    """A warning naming the step numbers that several CPU annotations of one process carry.

    Each profiler step is annotated once, so a repeated number means two windows (another
    profiler run in the same file, or a hand-made annotation) that the step totals merge.
    Exact copies of one annotation are dropped by the loader before this.
    """
    if len(numbers) < 2:
        return []
    pairs, counts = np.unique(np.stack([pids, numbers], axis=1), axis=0, return_counts=True)
    rep = counts > 1
    if not rep.any():
        return []
    listed = [f"#{int(n)} ×{int(k)}" for (_, n), k in zip(pairs[rep], counts[rep])]
    more = f" and {len(listed) - most} more" if len(listed) > most else ""
    return [f"{path}: ProfilerStep numbers used by more than one annotation of a process "
            f"({', '.join(listed[:most])}{more}): each such step counts the GPU activity of all "
            "its windows, and its step_wall_us is the longest"]


def _assign(t: np.ndarray, starts, ends, numbers) -> np.ndarray:
    """Step number of the window [start, end) containing each t (the latest-starting one)."""
    out = np.full(len(t), -1, dtype=np.int64)
    if len(starts) == 0:
        return out
    order = np.argsort(starts, kind="stable")
    starts, ends, numbers = np.asarray(starts)[order], np.asarray(ends)[order], np.asarray(numbers)[order]
    k = np.searchsorted(starts, t, side="right") - 1
    ok = (k >= 0) & ~np.isnan(t)
    ok[ok] = t[ok] < ends[k[ok]]
    out[ok] = numbers[k[ok]]
    return out


def step_windows(rank: RankTrace, gpu_rows: np.ndarray, launch: np.ndarray, device_id: int,
                 run=None) -> StepWindows:
    """Step of each GPU event (rows of one device) from the first source present (metrics.md)."""
    ev = rank.events
    t_gpu = ev.ts[gpu_rows]

    rows, numbers = _named_steps(ev, ev.cat == Cat.USER_ANNOTATION)
    if len(rows):
        step_of = np.full(len(gpu_rows), -1, dtype=np.int64)
        has = launch >= 0
        # A launch belongs to an annotation of its own process; windows of one pid are disjoint.
        for pid in np.unique(ev.pid[rows]):
            mine = rows[ev.pid[rows] == pid]
            sel = np.flatnonzero(has & (ev.pid[np.where(has, launch, 0)] == pid))
            step_of[sel] = _assign(ev.ts[launch[sel]], ev.ts[mine], ev.ts[mine] + ev.dur[mine],
                                   numbers[ev.pid[rows] == pid])
        wall: dict[int, float | None] = {}
        for r, n in zip(rows.tolist(), numbers.tolist()):
            wall[n] = max(wall.get(n) or 0.0, float(ev.dur[r]))
        return StepWindows("cpu_annotation", step_of, wall,
                           _repeated_steps(rank.path, ev.pid[rows], numbers))

    rows, numbers = _named_steps(ev, (ev.cat == Cat.GPU_USER_ANNOTATION) & (ev.pid == device_id))
    if len(rows):
        uniq = np.unique(numbers)
        starts = np.array([ev.ts[rows[numbers == n]].min() for n in uniq])
        ends = np.array([(ev.ts[rows[numbers == n]] + ev.dur[rows[numbers == n]]).max() for n in uniq])
        return StepWindows("gpu_annotation", _assign(t_gpu, starts, ends, uniq),
                           {int(n): None for n in uniq})

    recorded = _recorded_windows(rank, gpu_rows, run)
    if recorded is not None:
        starts, ends, numbers, warnings = recorded
        return StepWindows("recorded", _assign(t_gpu, starts, ends, numbers),
                           {int(n): None for n in numbers}, warnings)

    return StepWindows("none", np.full(len(gpu_rows), -1, dtype=np.int64), {})


def _recorded_windows(rank: RankTrace, gpu_rows: np.ndarray, run):
    """Windows from run.json (a ``RunInfo``): ``step_markers`` (marker kernels) or
    ``step_boundaries``."""
    run = runinfo.coerce(run)
    if run is None:
        return None
    ev = rank.events
    markers = run.step_markers
    if markers is not None and markers.kernel:
        needle = markers.kernel
        hit = np.array([needle in n for n in ev.names], dtype=bool)
        kern = gpu_rows[(ev.cat[gpu_rows] == Cat.KERNEL) & hit[ev.name[gpu_rows]]] if len(ev.names) else gpu_rows[:0]
        t = np.sort(ev.ts[kern])
        steps = markers.steps
        if len(t) and steps:
            warnings = []
            if len(t) not in (len(steps), len(steps) + 1):
                warnings.append(f"{rank.path}: {len(t)} step marker kernels for {len(steps)} recorded steps")
            n = min(len(steps), len(t))
            # Marker k opens step k; the next marker (the final one after the last step) closes it.
            ends = np.append(t[1:], np.inf)[:n]
            return t[:n], ends, np.array(steps[:n], dtype=np.int64), warnings
    bounds = run.step_boundaries
    if bounds:
        rows = [(b.step, b.start_us, b.end_us) for b in bounds]
        numbers = np.array([r[0] for r in rows], dtype=np.int64)
        starts = np.array([r[1] for r in rows]) - rank.origin_ts_us
        ends = np.array([r[2] for r in rows]) - rank.origin_ts_us
        return starts, ends, numbers, []
    return None
