"""The closing verdict of a diff: the changes larger than the per-step noise, in plain words.

It reads only the diff document (``diff.build_diff``): a change is named when its entry says
``significant``. A warning comes first when the two sides were profiled in different modes,
because then a time difference may be the profiler's rather than the change's.
"""

from __future__ import annotations

from speedtrace.analysis import fmt
from speedtrace.analysis.fmt import count_text, minus, time_text  # noqa: F401  (re-exported)
from speedtrace.analysis.kernel_match import op_name
from speedtrace.analysis.noise import NO_SPREAD_REL

# (totals key, words, how to phrase it) in the order a reader cares about.
METRIC_PHRASES = (
    ("span_us", "step GPU time", "time"),
    ("compute_us", "compute", "time"),
    ("exposed_comm_us", "exposed communication", "time"),
    ("exposed_memory_us", "exposed memory traffic", "time"),
    ("idle_us", "idle time", "time"),
    ("comp_comm_overlap_pct", "comm/compute overlap", "pct"),
    ("est_sm_efficiency_pct", "estimated SM efficiency", "pct"),
    ("achieved_occupancy_pct", "achieved occupancy", "pct"),
    ("sm_contention_us", "comm on full SMs", "time"),
    ("comm_queue_us", "comm queueing", "time"),
    ("comm_queue_full_sm_us", "comm queueing behind full SMs", "time"),
    ("kernel_count", "kernel count", "count"),
)
KERNELS_NAMED = 3
NAME_WIDTH = 48
GAP_GROUPS_NAMED = 3
_GAP_WORDS = {"idle": "idle gaps", "exposed_comm": "exposed communication"}


def _direction(delta: float) -> str:
    return "rose" if delta > 0 else "fell"


def _metric_clause(words: str, m: dict, how: str) -> str:
    if how == "pct":
        return f"{words} {_direction(m['delta'])} from {m['before']:.1f}% to {m['after']:.1f}%"
    if how == "count":
        return f"{words} {_direction(m['delta'])} from {count_text(round(m['before'], 1))} to {count_text(round(m['after'], 1))}"
    pct = "" if m.get("delta_pct") is None else " (" + minus(f"{m['delta_pct']:+.1f}") + "%)"
    return f"{words} {_direction(m['delta'])} {time_text(abs(m['delta']))}{pct}"


def _kernels(n) -> str:
    return f"{count_text(n)} kernel" + ("" if n == 1 else "s")


def _name(key) -> str:
    """A kernel name short enough for a sentence (the tables and JSON keep the full name)."""
    return fmt.kernel_name(key, NAME_WIDTH)


def _kernel_clauses(doc: dict) -> list[str]:
    kernels = doc["kernels"]
    by_key = {k["key"]: k for k in kernels}
    out, named = [], set()
    for k in kernels:
        absorbed = [by_key[a] for a in k["absorbed"] if a in by_key]
        if absorbed and any(a["significant"] for a in absorbed) and len(out) < KERNELS_NAMED:
            n = sum(a["before_count"] for a in absorbed)
            ops = sorted({op_name(op) for a in absorbed for op in (a["launch_ops"] or [])})
            what = "/".join(ops) + " " if ops else ""
            plural = "" if n == 1 else "s"
            out.append(f"{_name(k['key'])} absorbed {count_text(n)} eager {what}kernel{plural}")
            named.update([k["key"], *k["absorbed"]])
    others = [k for k in kernels if k["significant"] and k["status"] != "same"
              and k["key"] not in named and not k["absorbed_into"]]
    room = max(0, KERNELS_NAMED - len(out))
    for k in others[:room]:
        b, a = time_text(k["before_us"]), time_text(k["after_us"])
        if k["matched_from"]:
            out.append(f"{_name(k['matched_from'])} became {_name(k['key'])} ({b} → {a})")
        elif k["status"] == "added":
            out.append(f"{_name(k['key'])} is new ({_kernels(k['after_count'])}, {a})")
        elif k["status"] == "removed":
            out.append(f"{_name(k['key'])} is gone ({_kernels(k['before_count'])}, {b})")
        else:
            out.append(f"{_name(k['key'])} went from {b} to {a}")
    if len(others) > room:
        out.append(f"{len(others) - room} more kernel changes (see the kernel table)")
    return out


def _select_backward_clause(doc: dict) -> list[str]:
    m = doc["metrics"]
    n, us, fused = m["select_backward_kernels"], m["select_backward_us"], m["select_backward_fused_kernels"]
    out = []
    if n["significant"] or us["significant"]:
        out.append(f"{count_text(n['before'])} dedicated select_backward kernels ({time_text(us['before'])}) "
                   f"became {count_text(n['after'])} ({time_text(us['after'])})")
    if fused["significant"]:
        out.append(f"fused select_backward kernels went from {count_text(fused['before'])} to "
                   f"{count_text(fused['after'])}")
    return out


def _gap_clauses(doc: dict) -> list[str]:
    out = []
    groups = [g for g in doc["gaps"] if g["significant"] and g["status"] != "same"]
    for g in groups[:GAP_GROUPS_NAMED]:
        where = f"in '{g['phase']}'" if g["phase"] else "outside any phase"
        what = f"{_GAP_WORDS.get(g['kind'], g['kind'])} {where}"
        b, a = g["before"]["total_us"], g["after"]["total_us"]
        if g["status"] == "appeared":
            out.append(f"{what} appeared ({time_text(a)})")
        elif g["status"] == "disappeared":
            out.append(f"{what} disappeared ({time_text(b)})")
        else:
            verb = "grew" if a > b else "shrank"
            out.append(f"{what} {verb} from {time_text(b)} to {time_text(a)}")
    return out


def _sentence(clauses: list[str]) -> str:
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."


def verdict(doc: dict) -> str:
    """At most five short sentences: a mode warning, the significant metric changes, the kernel
    changes (three named, names shortened), select_backward and gaps, then what is noise."""
    lines = []
    if doc["profiling_differences"]:
        lines.append("Warning: the two sides were profiled in different modes ("
                     + "; ".join(doc["profiling_differences"])
                     + "), so time differences are partly the profiler's.")
    per_step = doc["basis"] == "per_step"
    metrics = []
    for key, words, how in METRIC_PHRASES:
        m = doc["metrics"][key]
        if m["significant"]:
            if key == "span_us" and not per_step:
                words = "GPU span"
            metrics.append(_metric_clause(words, m, how))
    kernels = _kernel_clauses(doc)
    # Kernel names keep their case: the sentence starts with a word, not with a name.
    groups = [metrics, ["kernels: " + kernels[0], *kernels[1:]] if kernels else [],
              _select_backward_clause(doc) + _gap_clauses(doc)]
    sentences = [_sentence(g) for g in groups if g]
    before_steps = len(doc["before"]["steps"])
    after_steps = len(doc["after"]["steps"])
    no_spread = not per_step or before_steps + after_steps < 3
    caveat = (" (no per-step spread to measure noise against: changes under "
              f"{100 * NO_SPREAD_REL:.0f}% are taken as noise)") if no_spread else ""
    if sentences:
        lines.append(" ".join(sentences) + f" Everything else is within noise{caveat}.")
    else:
        lines.append(f"No change exceeds the per-step noise: within noise{caveat}.")
    return "\n".join(lines)
