"""Collectives matched across ranks: skew, who waited for whom, and the straggler (metrics.md
"Across ranks").

An *instance* is one collective as every rank of its process group ran it. Each rank's
collectives are keyed by (process group, launch step, kind, message bytes) and numbered in
launch order within the key; the same key and number on every rank of the group present in the
trace set is one instance. A collective kernel cannot start its transfer before every rank has
arrived, so the rank that started last held the others: each other rank's kernel ran, waiting,
for ``wait_us`` = min(its duration, last start − its start). Ranks whose traces start or end at
different points leave instances seen on some ranks only: they are counted as unmatched, never
guessed. Times are compared on the trace clocks as written (the ranks of one host share a clock;
across hosts they are only as close as the hosts' clocks).
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from speedtrace.analysis.events import Cat
from speedtrace.analysis.links import PROFILER_STEP

_RANK_LIST = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")


def _group_ranks(text) -> tuple[int, ...] | None:
    """``Process Group Ranks`` ("[0, 1, 2]" or a list) as a tuple of ints (None: unreadable)."""
    if isinstance(text, str):
        if not _RANK_LIST.fullmatch(text.strip()):
            return None
        value = [int(x) for x in text.strip()[1:-1].split(",")]
    elif isinstance(text, (list, tuple)):
        value = text
    else:
        return None
    if not value or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in value):
        return None
    return tuple(sorted(set(value)))


def _pg_ranks(table) -> dict[int, tuple[int, ...] | None]:
    """Row index -> the ranks of its process group as written by record_param_comms."""
    return {j: _group_ranks(table.rank.args_of(r).get("pg_ranks")) if r >= 0 else None
            for j, r in enumerate(table.args_row.tolist())}


def _empty() -> dict:
    return {"matched": 0, "instances": [], "stragglers": [], "lateness": [],
            "unmatched": {"count": 0, "no_step": 0, "partial": 0}, "straggler": None, "warnings": []}


def cross_rank(tables: list, step_range: tuple[int, int] | None = None) -> dict:
    """Match the collectives of one ``CollectiveTable`` per rank (``collectives.collective_table``;
    see the module docstring). ``step_range`` (first, last), inclusive, keeps those steps' collectives.

    Returns ``matched`` (instances found on every rank of their group), ``instances`` (per
    instance: kind, step, process_group, seq, bytes, ranks, start_skew_us, last_rank, and per
    rank, aligned with ``ranks``: wait_us and late_us = start − first start), ``stragglers`` (per
    rank: rank, last_count, wait_caused_us; most wait caused first), ``lateness`` (per rank and
    step), ``unmatched`` ({count, no_step, partial}), ``straggler`` (one sentence, or None) and
    ``warnings``."""
    seen: dict[int, object] = {}
    warnings: list[str] = []
    for table in tables:  # one device per rank: the first with collectives
        r = table.rank.rank
        if r not in seen or (len(table.idx) and not len(seen[r].idx)):
            seen[r] = table
    present = sorted(seen)
    if len(present) < 2:  # nothing to match against
        return _empty()
    # Each rank's times on a common axis: after the earliest origin (differences of origins are
    # small, so the sums keep the nanoseconds that absolute times near 1.7e15 µs would lose).
    ref = min(seen[r].rank.origin_ts_us for r in present)
    shift = {r: round((seen[r].rank.origin_ts_us - ref) * 1000.0) / 1000.0 for r in present}

    # Per rank: key -> rows in launch order; the ranks seen per process group.
    keyed: dict[int, dict[tuple, list[int]]] = {}
    groups: dict[str | None, set[int]] = defaultdict(set)
    written_ranks: dict[str | None, tuple[int, ...]] = {}
    no_step = 0
    for r in present:
        table = seen[r]
        ev = table.rank.events
        pg_ranks = _pg_ranks(table)
        order_t = np.where(table.launch >= 0, ev.ts[np.maximum(table.launch, 0)], table.start)
        by_key: dict[tuple, list[tuple[float, int]]] = defaultdict(list)
        for j, row in enumerate(table.rows):
            step = row["step"]
            if step is None and table.step_source != "none":
                if step_range is None:
                    no_step += 1
                continue
            if step_range is not None and (step is None or not step_range[0] <= step <= step_range[1]):
                continue
            pg = row["process_group"]
            groups[pg].add(r)
            if pg_ranks.get(j):
                written_ranks.setdefault(pg, pg_ranks[j])
            by_key[(pg, step, row["kind"], row["bytes"])].append((float(order_t[j]), j))
        keyed[r] = {k: [j for _, j in sorted(v)] for k, v in by_key.items()}
    tables_by_rank = seen

    members: dict[str | None, list[int]] = {}
    for pg, ranks in groups.items():
        written = written_ranks.get(pg)
        if written is not None:
            missing = sorted(set(written) - set(present))
            if missing:
                warnings.append(f"process group {pg}: ranks {_ranges(missing)} are not in the trace set; "
                                "its collectives are matched over the ranks present")
            members[pg] = sorted(set(written) & set(present))
        else:
            members[pg] = sorted(ranks)

    instances = []
    partial = 0
    all_keys = {(k, s) for r in present for k, js in keyed[r].items() for s in range(len(js))}
    for key, seq in sorted(all_keys, key=lambda ks: (str(ks[0][0]), _num(ks[0][1]), ks[0][2], _num(ks[0][3]), ks[1])):
        group = members.get(key[0], [])
        if len(group) < 2:  # one rank of the group in the set: nothing to compare
            continue
        have = [r for r in group if seq < len(keyed[r].get(key, ()))]
        if len(have) != len(group):
            partial += len(have)
            continue
        pg = key[0]
        js = [keyed[r][key][seq] for r in have]
        starts = np.array([shift[r] + tables_by_rank[r].start[j] for r, j in zip(have, js)])
        durs = np.array([tables_by_rank[r].end[j] - tables_by_rank[r].start[j] for r, j in zip(have, js)])
        last = float(starts.max())
        late = starts - starts.min()
        wait = np.minimum(durs, last - starts)
        skew = float(late.max())
        last_i = int(np.argmax(starts))
        instances.append({
            "kind": key[2], "step": key[1], "process_group": pg, "seq": seq, "bytes": key[3],
            "ranks": have, "start_skew_us": skew, "last_rank": have[last_i] if skew > 0 else None,
            "wait_us": [float(w) for w in wait], "late_us": [float(x) for x in late],
            "_rows": js, "_first_abs": float(starts.min()),
        })
    instances.sort(key=lambda i: (i["_first_abs"], str(i["process_group"])))

    stragglers = {r: {"rank": r, "last_count": 0, "wait_caused_us": 0.0} for r in present}
    lateness: dict[tuple[int, int | None], dict] = {}
    for inst in instances:
        if inst["last_rank"] is not None:
            s = stragglers[inst["last_rank"]]
            s["last_count"] += 1
            s["wait_caused_us"] += float(sum(inst["wait_us"]))
        for r, late in zip(inst["ranks"], inst["late_us"]):
            cell = lateness.setdefault((r, inst["step"]), {"rank": r, "step": inst["step"], "instances": 0,
                                                          "late_total_us": 0.0, "late_max_us": 0.0,
                                                          "last_count": 0})
            cell["instances"] += 1
            cell["late_total_us"] += late
            cell["late_max_us"] = max(cell["late_max_us"], late)
            cell["last_count"] += int(inst["last_rank"] == r)
    ranked = sorted(stragglers.values(), key=lambda s: (-s["wait_caused_us"], s["rank"]))
    ranked = [s for s in ranked if any(s["rank"] in i["ranks"] for i in instances)]

    unmatched = {"count": no_step + partial, "no_step": no_step, "partial": partial}
    if unmatched["count"]:
        parts = []
        if no_step:
            parts.append(f"{no_step} ran outside every profiler step (launched before the profiler "
                         "window or after it)")
        if partial:
            parts.append(f"{partial} were not found on every rank of their process group (the ranks' "
                         "traces cover different stretches)")
        warnings.append(f"{unmatched['count']} collective kernels (summed over {len(present)} ranks) could not "
                        "be matched across ranks: " + "; ".join(parts))
    sentence = _straggler_sentence(ranked, instances, tables_by_rank, shift)
    for inst in instances:
        del inst["_rows"], inst["_first_abs"]
    return {"matched": len(instances), "instances": instances, "stragglers": ranked,
            "lateness": sorted(lateness.values(), key=lambda c: (c["rank"], _num(c["step"]))),
            "unmatched": unmatched, "straggler": sentence, "warnings": warnings}


def _num(v):
    return -1 if v is None else v


def _ranges(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out, i = [], 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        out.append(str(ranks[i]) if i == j else f"{ranks[i]}-{ranks[j]}")
        i = j + 1
    return ", ".join(out)


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "unknown size"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def longest_op_before(table, launch_row: int) -> tuple[str, float] | None:
    """The longest CPU op on the launching thread that ended before the launch and began after
    the previous collective launch on that thread (or the start of the enclosing profiler step):
    what the host was busy with just before it launched. ``table``: the rank's CollectiveTable."""
    ev = table.rank.events
    t = float(ev.ts[launch_row])
    same = (ev.pid == ev.pid[launch_row]) & (ev.tid == ev.tid[launch_row])
    lo = -np.inf
    before = table.launch[(table.launch >= 0)]
    before = before[(ev.ts[before] < t) & same[before]]
    if len(before):
        lo = float((ev.ts[before] + ev.dur[before]).max())
    steps = np.flatnonzero((ev.cat == Cat.USER_ANNOTATION) & (ev.pid == ev.pid[launch_row]) & (ev.ts <= t)
                           & (ev.ts + ev.dur > t))
    steps = [s for s in steps.tolist() if PROFILER_STEP.match(ev.names[ev.name[s]])]
    if steps:
        lo = max(lo, float(max(ev.ts[s] for s in steps)))
    m = np.flatnonzero(same & (ev.cat == Cat.CPU_OP) & (ev.ts >= lo) & (ev.ts + ev.dur <= t))
    if len(m) == 0:
        return None
    best = int(m[np.argmax(ev.dur[m])])
    return ev.names[ev.name[best]], float(ev.dur[best])


def _straggler_sentence(ranked, instances, tables, shift) -> str | None:
    if not ranked or ranked[0]["wait_caused_us"] <= 0:
        return None
    top = ranked[0]
    r = top["rank"]
    theirs = [i for i in instances if i["last_rank"] == r]
    worst = max(theirs, key=lambda i: sum(i["wait_us"]))
    table = tables[r]
    j = worst["_rows"][worst["ranks"].index(r)]
    row = table.rows[j]
    nth = worst["seq"] + 1
    text = (f"Rank {r} arrived last at {top['last_count']} of {len(instances)} matched collectives and kept "
            f"the other ranks waiting {_ms(top['wait_caused_us'])} in all (summed over ranks); at the costliest, "
            f"the {_ordinal(nth)} {worst['kind']} of {_size(worst['bytes'])} in step {worst['step']} "
            f"({_ms(sum(worst['wait_us']))} of waiting, {_ms(worst['start_skew_us'])} behind the first rank),")
    launch = int(table.launch[j])
    if launch < 0:
        return text + " its launch is not in the trace."
    ev = table.rank.events
    phase = row["launch_phase"] or "no annotated phase"
    op = longest_op_before(table, launch)
    doing = f" after {op[0]} ({_ms(op[1])})" if op else ""
    launch_end = shift[r] + float(ev.ts[launch] + ev.dur[launch])
    others_first = min(shift[q] + tables[q].start[jq] for q, jq in zip(worst["ranks"], worst["_rows"]) if q != r)
    if launch_end > others_first:
        why = "its host launched it after the other ranks had started"
    else:
        why = (f"its host had launched it {_ms(shift[r] + table.start[j] - launch_end)} before it started, "
               "so its GPU, not its host, was behind")
    return text + f" it was launched in {phase}{doing}; {why}."


def _ordinal(n: int) -> str:
    if n == 1:
        return "first"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
