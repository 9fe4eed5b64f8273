"""Before and after: what changed between two trace sets (metrics.md "Diff JSON").

``build_diff(before, after)`` takes two loaded ``TraceSet``s and returns the
``speedtrace.diff/1`` document; ``speedtrace.analysis.diff_render`` prints it as text or
markdown. The steps:

1. Per (rank, device) and side, ``metrics.device_metrics`` gives the ``Sums`` of the whole
   trace and of each step with GPU activity, and per kernel key and per gap group (kind,
   phase) a count and µs, per step and whole: the diff never rebuilds a timeline.
2. The basis is ``per_step`` when every entry of both sides has steps, else ``whole_trace``.
   Per step, an entry's value is the mean over its steps; a side's is the mean over its entries.
3. Kernels are matched by key, then renamed Inductor kernels and absorbed eager kernels are
   paired (``kernel_match``); gap groups are compared by (kind, phase).
4. Every change is tested against the per-step noise (``noise.significance``); the verdict names only
   those that pass, after a warning when the sides were profiled differently.

Choices where metrics.md leaves room:
- Percentages over several steps or ranks are ratios of pooled parts (``sums.ratios``): overlap
  over comm; the SM-busy integral over span; for occupancy, Σ occ·dur over Σ dur of the compute
  kernels that carry it.
- Kernel and gap counts and µs are per step per rank on the per_step basis (the mean over a
  rank's steps, then over ranks), per trace per rank otherwise; ``units`` says which.
- Per-step gaps are those inside the step's own GPU span (``metrics.phase_group`` names them).
- An eager kernel's launching aten op is the innermost ``aten::`` CPU op around its launch.
  Besides renamed kernels (whose new ops are the ops their old name lacked), a Triton kernel
  that is new altogether can absorb an eager kernel (all its ops are new).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedtrace.analysis import fmt
from speedtrace.analysis import kernel_match as km
from speedtrace.analysis import sums as sm
from speedtrace.analysis.diff_verdict import verdict
from speedtrace.analysis.events import Cat, TraceSet
from speedtrace.analysis.kernels import display_keys
from speedtrace.analysis.metrics import DeviceMetrics, device_metrics
from speedtrace.analysis.noise import significance
from speedtrace.analysis.sums import TOTAL_KEYS, Sums
from speedtrace.errors import SpeedtraceError
from speedtrace.profiling import runinfo

SCHEMA = "speedtrace.diff/1"

# Kernel status (metrics.md): same when counts match and |Δµs| ≤ max(2 µs · count, 3%).
SAME_US_PER_KERNEL = 2.0
SAME_REL = 0.03
# Gap groups change when they move by more than 20% and more than 5 µs per step.
GAP_CHANGE_REL = 0.20
GAP_CHANGE_US = 5.0
# GPU time outside the steps above this share of a side's busy time is named in a warning.
OUTSIDE_STEPS_SHARE = 0.05
# Profiling modes differ when dilation differs by more than this.
DILATION_TOLERANCE = 0.03
_DILATING_OPTIONS = ("record_shapes", "with_stack", "profile_memory")



@dataclass
class Side:
    """One side of the diff: its trace set and the ``DeviceMetrics`` of each (rank, device)."""

    trace_set: TraceSet
    entries: list[DeviceMetrics]

    @property
    def has_steps(self) -> bool:
        return all(e.active_steps() for e in self.entries)

    @property
    def steps(self) -> list[int]:
        return sorted({s for e in self.entries for s in e.active_steps()})


def load_side(trace_set: TraceSet, *, min_gap_us: float = 5.0) -> Side:
    """``device_metrics`` for every (rank, device) with GPU activity; SpeedtraceError when none has."""
    entries = [device_metrics(rt, d, trace_set.run, min_gap_us=min_gap_us, top=0, for_diff=True)
               for rt in trace_set.ranks for d in rt.gpu_devices()]
    if not entries:
        raise SpeedtraceError(f"{trace_set.path}: no GPU activity (kernel, memcpy, memset) to compare")
    return Side(trace_set, entries)


# ----------------------------------------------------------------------------- pooling


def _step_sums(e: DeviceMetrics) -> dict[int, Sums]:
    return {st.step: st.sums for st in e.steps}


def _entry_sums(e: DeviceMetrics, per_step: bool) -> Sums:
    """An entry's sums: the mean over its active steps, or its whole trace."""
    if not per_step:
        return e.whole
    by_step = _step_sums(e)
    return sm.mean([by_step[s] for s in e.active_steps()])


def _steps_pooled(side: Side) -> list[Sums]:
    """Per step number (ascending), the sums pooled over the entries that have that step."""
    out = []
    for s in side.steps:
        out.append(sm.mean([_step_sums(e)[s] for e in side.entries if s in e.active_steps()]))
    return out


def _tally(side: Side, attr: str, per_step: bool) -> dict:
    """item -> (count, µs) of a ``DeviceMetrics`` table (``kernel_sums`` or ``gap_groups``): per
    step per rank, or per trace per rank; an item an entry lacks counts 0 there."""
    sums: dict = {}
    for e in side.entries:
        weight = 1.0 / len(e.active_steps()) if per_step else 1.0
        for (item, step), (n, us) in getattr(e, attr).items():
            if (step is None) == per_step:
                continue
            c, u = sums.get(item, (0.0, 0.0))
            sums[item] = (c + n * weight, u + us * weight)
    k = len(side.entries)
    return {item: (c / k, u / k) for item, (c, u) in sums.items()}


def _phases_of(side) -> dict[str, set]:
    """Kernel key -> the phases its launches ran in, over all ranks of one side."""
    out: dict[str, set] = {}
    for e in side.entries:
        for k, phases in e.kernel_phases.items():
            out.setdefault(k, set()).update(phases)
    return out


def _tally_by_step(side: Side, attr: str) -> dict:
    """item -> µs per step number (ascending), the mean over the entries having the step."""
    steps = side.steps
    out: dict = {}
    for j, s in enumerate(steps):
        having = [e for e in side.entries if s in e.active_steps()]
        for e in having:
            for (item, step), (_, us) in getattr(e, attr).items():
                if step == s:
                    out.setdefault(item, [0.0] * len(steps))[j] += us / len(having)
    return out


# ----------------------------------------------------------------------------- comparisons


def _change(b: float | None, a: float | None) -> dict:
    delta = a - b if a is not None and b is not None else None
    pct = 100.0 * delta / abs(b) if delta is not None and b else None
    return {"before": b, "after": a, "delta": delta, "delta_pct": pct}


def compare_metrics(before: Side, after: Side, per_step: bool) -> dict:
    """Every totals key: before, after, delta, delta_pct and its significance."""
    tb = sm.totals(sm.mean([_entry_sums(e, per_step) for e in before.entries]))
    ta = sm.totals(sm.mean([_entry_sums(e, per_step) for e in after.entries]))
    sb = [sm.totals(x) for x in _steps_pooled(before)] if per_step else []
    sa = [sm.totals(x) for x in _steps_pooled(after)] if per_step else []
    out = {}
    for k in TOTAL_KEYS:
        series_b = [r[k] for r in sb if r[k] is not None]
        series_a = [r[k] for r in sa if r[k] is not None]
        out[k] = {**_change(tb[k], ta[k]), **significance(series_b, series_a, tb[k], ta[k])}
    return out


def compare_ranks(before: Side, after: Side, per_step: bool) -> list[dict]:
    """Per (rank, device) on either side: its steps and its metrics before and after."""
    by_b = {(e.rank, e.device_id): e for e in before.entries}
    by_a = {(e.rank, e.device_id): e for e in after.entries}
    out = []
    for key in sorted(by_b.keys() | by_a.keys()):
        eb, ea = by_b.get(key), by_a.get(key)
        tb = sm.totals(_entry_sums(eb, per_step)) if eb else {}
        ta = sm.totals(_entry_sums(ea, per_step)) if ea else {}
        out.append({"rank": key[0], "device_id": key[1],
                    "before_steps": len(eb.active_steps()) if eb else None,
                    "after_steps": len(ea.active_steps()) if ea else None,
                    "metrics": {k: _change(tb.get(k), ta.get(k)) for k in TOTAL_KEYS}})
    return out


def kernel_status(before_count: float, after_count: float, before_us: float, after_us: float) -> str:
    """``same`` when counts are equal and |Δµs| ≤ max(2 µs · count, 3% of before), else ``changed``."""
    if abs(after_count - before_count) > 1e-9 * max(1.0, before_count):
        return "changed"
    allowed = max(SAME_US_PER_KERNEL * before_count, SAME_REL * before_us)
    return "same" if abs(after_us - before_us) <= allowed + 1e-9 else "changed"


def compare_kernels(before: Side, after: Side, per_step: bool) -> list[dict]:
    """The kernel entries of the diff, largest |Δµs| first (see the module docstring)."""
    tb, ta = _tally(before, "kernel_sums", per_step), _tally(after, "kernel_sums", per_step)
    series_b = _tally_by_step(before, "kernel_sums") if per_step else {}
    series_a = _tally_by_step(after, "kernel_sums") if per_step else {}
    zeros_b, zeros_a = [0.0] * len(before.steps), [0.0] * len(after.steps)
    if not per_step:
        zeros_b = zeros_a = []
    classes = {}
    for side in (after, before):
        for e in side.entries:
            classes.update(e.kernel_class)

    removed = sorted(tb.keys() - ta.keys())
    added = sorted(ta.keys() - tb.keys())
    pairs = km.pair_renamed(removed, added)
    renamed_from = {a: r for r, a, _ in pairs}
    paired_before = set(renamed_from.values())
    hosts = [(a, km.fused_ops(a) - km.fused_ops(r)) for r, a, _ in sorted(pairs, key=lambda p: -ta[p[1]][1])]
    hosts += [(a, km.fused_ops(a)) for a in sorted(added, key=lambda k: -ta[k][1])
              if a not in renamed_from and km.fused_kind(a) is not None]
    launch_ops: dict[str, set[str]] = {}
    for e in before.entries:
        for k, ops in e.launch_ops.items():
            launch_ops.setdefault(k, set()).update(ops)
    phases_before, phases_after = _phases_of(before), _phases_of(after)
    eager_removed = {k: launch_ops.get(k, set()) for k in removed
                     if k not in paired_before and not k.startswith("triton_")}
    host_of = km.absorbed_into(eager_removed, hosts, phases_before, phases_after)

    out = []
    for key in sorted(tb.keys() | ta.keys()):
        if key in paired_before:
            continue
        source = renamed_from.get(key, key)
        bn, bu = tb.get(source, (0.0, 0.0))
        an, au = ta.get(key, (0.0, 0.0))
        if key in renamed_from:
            status = "changed"
        elif source not in tb:
            status = "added"
        elif key not in ta:
            status = "removed"
        else:
            status = kernel_status(bn, an, bu, au)
        entry = {"key": key, "class": classes.get(key) or classes.get(source),
                 "before_count": _count(bn), "after_count": _count(an),
                 "before_us": bu, "after_us": au, "delta_us": au - bu, "status": status,
                 "matched_from": renamed_from.get(key),
                 "absorbed": sorted(k for k, h in host_of.items() if h == key),
                 "absorbed_into": host_of.get(key),
                 "launch_ops": sorted(launch_ops.get(key, ())) if key in eager_removed else None}
        entry.update(significance(series_b.get(source, zeros_b), series_a.get(key, zeros_a), bu, au))
        out.append(entry)
    # Keys carry the launch configuration; it is shown only for names that have several.
    shown = display_keys(tb.keys() | ta.keys())
    for entry in out:
        entry["key"] = shown[entry["key"]]
        entry["matched_from"] = shown.get(entry["matched_from"])
        entry["absorbed"] = sorted(shown[k] for k in entry["absorbed"])
        entry["absorbed_into"] = shown.get(entry["absorbed_into"])
    out.sort(key=lambda r: (-abs(r["delta_us"]), r["key"]))
    return out


# What the diff sums per collective kind, and the row field each comes from (None: a count).
_COLLECTIVE_SUMS = {"count": None, "bytes": "bytes", "us": "dur_us", "exposed_us": "exposed_us"}


def _no_collectives() -> dict:
    return dict.fromkeys(_COLLECTIVE_SUMS, 0.0)


def _collective_tally(side: Side, per_step: bool) -> dict[str, dict]:
    """kind -> {count, bytes, us, exposed_us}: per step per rank (the collectives of active
    steps, over the entry's steps, then the mean over entries) or per trace per rank."""
    out: dict[str, dict] = {}
    for e in side.entries:
        active = set(e.active_steps())
        weight = 1.0 / len(active) if per_step and active else 1.0
        for r in e.collectives:
            if per_step and r["step"] not in active:
                continue
            t = out.setdefault(r["kind"], _no_collectives())
            for k, source in _COLLECTIVE_SUMS.items():
                t[k] += weight * (1.0 if source is None else (r[source] or 0.0))
    n = len(side.entries)
    return {kind: {k: v / n for k, v in t.items()} for kind, t in out.items()}


def _sides(b: dict, a: dict) -> dict:
    """before_* and after_* of two tallies (counts as ints when whole)."""
    out = {}
    for prefix, t in (("before", b), ("after", a)):
        for k in _COLLECTIVE_SUMS:
            out[f"{prefix}_{k}"] = _count(t[k]) if k == "count" else t[k]
    return out


def _collective_keys(e: DeviceMetrics, steps: dict) -> dict[tuple, str | None]:
    """(step, kind, bytes, seq) -> launch phase of one entry's collectives launched in a step;
    ``steps`` maps the entry's step numbers to the numbers they are compared under."""
    seen: dict[tuple, int] = {}
    out = {}
    for r in e.collectives:  # in start order
        if r["step"] is None or r["queue_us"] is None or r["step"] not in steps:
            continue
        base = (steps[r["step"]], r["kind"], r["bytes"])
        seq = seen.get(base, 0)
        seen[base] = seq + 1
        out[(*base, seq)] = r["launch_phase"]
    return out


def compare_collectives(before: Side, after: Side, per_step: bool) -> dict:
    """Collectives before and after: per kind count, bytes, time and exposed time (units as the
    kernels'), and ``phase_changes``: collectives matched by (rank, device, step, kind, bytes,
    order) whose launch phase differs, counted per (kind, step, before phase, after phase). Steps
    are compared by number when an entry has the same step numbers on both sides, else by position
    (the first step with the first), under the before side's numbers."""
    tb, ta = _collective_tally(before, per_step), _collective_tally(after, per_step)
    kinds = [{"kind": kind, **_sides(tb.get(kind, _no_collectives()), ta.get(kind, _no_collectives()))}
             for kind in sorted(tb.keys() | ta.keys())]
    changes: dict[tuple, int] = {}
    by_a = {(e.rank, e.device_id): e for e in after.entries}
    for eb in before.entries:
        ea = by_a.get((eb.rank, eb.device_id))
        if ea is None:
            continue
        sb, sa = eb.active_steps(), ea.active_steps()
        keys_b = _collective_keys(eb, {s: s for s in sb})
        keys_a = _collective_keys(ea, {s: s for s in sa} if sa == sb else dict(zip(sa, sb)))
        for key, phase_b in keys_b.items():
            if key in keys_a and keys_a[key] != phase_b:
                step, kind = key[0], key[1]
                group = (kind, step, phase_b, keys_a[key])
                changes[group] = changes.get(group, 0) + 1
    phase_changes = [{"kind": k, "step": st, "before_phase": pb, "after_phase": pa, "count": n}
                     for (k, st, pb, pa), n in sorted(changes.items(), key=lambda kv: (kv[0][1], kv[0][0],
                                                                                       str(kv[0][2]), str(kv[0][3])))]

    whole = _sides(*({k: sum(v[k] for v in t.values()) for k in _COLLECTIVE_SUMS} for t in (tb, ta)))
    return {"before": {k: whole[f"before_{k}"] for k in _COLLECTIVE_SUMS},
            "after": {k: whole[f"after_{k}"] for k in _COLLECTIVE_SUMS},
            "kinds": kinds, "phase_changes": phase_changes}


def _count(x: float):
    """A per-step count: an int when whole (the usual case), else the float."""
    return int(round(x)) if abs(x - round(x)) < 1e-9 else x


def gap_status(before_count: float, after_count: float, before_us: float, after_us: float) -> str:
    """appeared / disappeared (a group on one side only), changed (moves by more than 20% and
    more than 5 µs), same."""
    if before_count == 0 and after_count > 0:
        return "appeared"
    if after_count == 0 and before_count > 0:
        return "disappeared"
    delta = abs(after_us - before_us)
    return "changed" if delta > GAP_CHANGE_REL * before_us and delta > GAP_CHANGE_US else "same"


def compare_gaps(before: Side, after: Side, per_step: bool) -> list[dict]:
    """Gap groups by (kind, phase), largest |Δµs| first."""
    tb, ta = _tally(before, "gap_groups", per_step), _tally(after, "gap_groups", per_step)
    series_b = _tally_by_step(before, "gap_groups") if per_step else {}
    series_a = _tally_by_step(after, "gap_groups") if per_step else {}
    zeros_b = [0.0] * len(before.steps) if per_step else []
    zeros_a = [0.0] * len(after.steps) if per_step else []
    out = []
    for item in sorted(tb.keys() | ta.keys(), key=lambda i: (i[0], i[1] or "")):
        bn, bu = tb.get(item, (0.0, 0.0))
        an, au = ta.get(item, (0.0, 0.0))
        entry = {"kind": item[0], "phase": item[1],
                 "before": {"count": _count(bn), "total_us": bu},
                 "after": {"count": _count(an), "total_us": au},
                 "delta_us": au - bu, "status": gap_status(bn, an, bu, au)}
        entry.update(significance(series_b.get(item, zeros_b), series_a.get(item, zeros_a), bu, au))
        out.append(entry)
    out.sort(key=lambda r: -abs(r["delta_us"]))
    return out


# ----------------------------------------------------------------------------- profiling modes


def profile_of(trace_set: TraceSet) -> dict:
    """What determines how much the profiler dilated a side: run.json's mode, activities and
    dilation, the dilating trace options, and whether CPU events were traced."""
    from speedtrace.analysis.report import run_summary

    run = run_summary(trace_set.run) or {}
    info = trace_set.run or runinfo.RunInfo()
    cpu = (Cat.CPU_OP, Cat.USER_ANNOTATION, Cat.CUDA_RUNTIME, Cat.CUDA_DRIVER)
    out = {"mode": run.get("mode"), "activities": info.activities, "cuda_graphs": run.get("cuda_graphs"),
           "dilation": run.get("dilation"),
           "cpu_events": any(bool(np.isin(rt.events.cat, cpu).any()) for rt in trace_set.ranks)}
    for option in _DILATING_OPTIONS:
        out[option] = any(getattr(rt, option, False) for rt in trace_set.ranks)
    return out


def profiling_differences(before: dict, after: dict) -> list[str]:
    """How two ``profile_of`` results differ, in words (empty when they do not)."""
    out = []
    for key in ("mode", "activities", "cuda_graphs"):
        if before[key] is not None and after[key] is not None and before[key] != after[key]:
            b, a = ({True: "on", False: "off"}.get(v, v) for v in (before[key], after[key]))
            out.append(f"{key} {b} before, {a} after")
    db, da = before["dilation"], after["dilation"]
    if db is not None and da is not None and abs(db - da) > DILATION_TOLERANCE:
        out.append(f"dilation {db:.2f} before, {da:.2f} after")
    for option in _DILATING_OPTIONS:
        if before[option] != after[option]:
            out.append(f"{option} {'on' if before[option] else 'off'} before, "
                       f"{'on' if after[option] else 'off'} after")
    if before["cpu_events"] != after["cpu_events"]:
        which = "before only" if before["cpu_events"] else "after only"
        out.append(f"CPU events traced {which}")
    return out


def _ranks_text(side: Side) -> str:
    return ", ".join(f"{e.rank}" + (f":{e.device_id}" if len(side.entries) > 1 else "")
                     for e in side.entries)


def _warnings(before: Side, after: Side, per_step: bool, differences: list[str]) -> list[str]:
    out = []
    if differences:
        out.append("the two sides were profiled in different modes (" + "; ".join(differences) +
                   "): part of any time difference is the profiler's, not the change's")
    if not per_step:
        nb, na = len(before.steps), len(after.steps)
        if (before.has_steps or after.has_steps) and nb != na:
            def has(side, n):
                return f"{n} steps" if side.has_steps else "no step windows"
            out.append(f"totals compared over whole traces: {before.trace_set.path} has "
                       f"{has(before, nb)}, {after.trace_set.path} has {has(after, na)}; they "
                       "compare only if both traces cover the same work")
    gpus_b = sorted({e.device for e in before.entries if e.device})
    gpus_a = sorted({e.device for e in after.entries if e.device})
    if gpus_b and gpus_a and gpus_b != gpus_a:
        out.append(f"the sides ran on different GPU models (before: {', '.join(gpus_b)}; after: "
                   f"{', '.join(gpus_a)}): kernel times differ by the hardware as well as by the change")
    if per_step:
        out += [w for side in (before, after) if (w := _outside_steps_warning(side))]
    keys_b = {(e.rank, e.device_id) for e in before.entries}
    keys_a = {(e.rank, e.device_id) for e in after.entries}
    if keys_b != keys_a:
        out.append(f"the sides have different ranks (before: {_ranks_text(before)}; after: "
                   f"{_ranks_text(after)}); each side's metrics are means over its own ranks")
    for side in (before, after):
        out += _host_bound_warnings(side.trace_set)
        out += [w for w in side.trace_set.warnings if w not in out]
    return out


def _outside_steps_warning(side: Side) -> str | None:
    """A per-step comparison leaves out GPU time outside the profiler steps: say so when that
    is more than ``OUTSIDE_STEPS_SHARE`` of the side's GPU busy time."""
    outside = sum(e.unassigned_gpu_us or 0.0 for e in side.entries)
    busy = sum(e.whole.busy_us for e in side.entries)
    if busy <= 0 or outside <= OUTSIDE_STEPS_SHARE * busy:
        return None
    return (f"{side.trace_set.path}: {fmt.time_text(outside)} of its {fmt.time_text(busy)} of GPU busy time "
            f"({100 * outside / busy:.0f}%) lies outside the profiler steps, which a per-step "
            "comparison leaves out")


def _host_bound_warnings(trace_set: TraceSet) -> list[str]:
    """A side whose profiled steps waited on the host: its step times and idle time are the host's."""
    from speedtrace.analysis.report import run_summary
    from speedtrace.profiling.verdict import host_times

    run = run_summary(trace_set.run)
    if not run or not run["host_bound"]["profiled"]:
        return []
    return [f"{trace_set.path}: the profiled steps were host-bound ({host_times(run, 'profiled')}): its step "
            "times and idle time measure the host as much as the GPU, so compare kernel counts and kernel "
            "times rather than those"]


# ----------------------------------------------------------------------------- the document


def build_diff(before: TraceSet, after: TraceSet, *, min_gap_us: float = 5.0) -> dict:
    """The ``speedtrace.diff/1`` document comparing two loaded trace sets (metrics.md)."""
    sides = [load_side(ts, min_gap_us=min_gap_us) for ts in (before, after)]
    b, a = sides
    per_step = b.has_steps and a.has_steps
    unit = "per step per rank" if per_step else "per trace per rank"
    profiles = [profile_of(ts) for ts in (before, after)]
    differences = profiling_differences(*profiles)
    doc = {
        "schema": SCHEMA,
        "basis": "per_step" if per_step else "whole_trace",
        "units": {"metrics": ("mean over steps, then over ranks" if per_step else "whole trace, mean over ranks"),
                  "kernels": unit, "gaps": unit, "collectives": unit},
        "min_gap_us": min_gap_us,
        "before": _side_summary(b, profiles[0]),
        "after": _side_summary(a, profiles[1]),
        "profiling_differences": differences,
        "warnings": _warnings(b, a, per_step, differences),
        "metrics": compare_metrics(b, a, per_step),
        "ranks": compare_ranks(b, a, per_step),
        "kernels": compare_kernels(b, a, per_step),
        "gaps": compare_gaps(b, a, per_step),
        "collectives": compare_collectives(b, a, per_step),
    }
    doc["verdict"] = verdict(doc)
    return doc


def _side_summary(side: Side, profile: dict) -> dict:
    return {"path": str(side.trace_set.path),
            "ranks": [{"rank": e.rank, "device_id": e.device_id, "step_source": e.step_source,
                       "steps": e.active_steps()} for e in side.entries],
            "steps": side.steps, "profile": profile}
