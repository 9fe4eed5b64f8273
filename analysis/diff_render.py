"""Text and markdown forms of a diff document (``diff.build_diff``); they only format it.

Order: a short header (paths, basis, steps per side, warnings), the metric table, the kernel
changes (not the ``same`` ones; absorbed eager kernels under the kernel that absorbed them),
select_backward, SM contention and comm queueing, the gap groups that changed, the verdict.
"""

from __future__ import annotations

from speedtrace.analysis.diff_verdict import count_text, minus
from speedtrace.analysis.tables import md_escape, md_table, text_table

KERNELS_SHOWN = 20
GAP_GROUPS_SHOWN = 20
NAME_WIDTH = 64
_TIME_KEYS_WITHOUT_US = ("kernel_count", "comm_kernel_count", "select_backward_kernels",
                         "select_backward_fused_kernels", "select_backward_cpu_ops")


def _value(key: str, x) -> str:
    if x is None:
        return "n/a"
    if key.endswith("_pct"):
        return f"{x:.1f}%"
    if key in _TIME_KEYS_WITHOUT_US:
        return count_text(round(x, 1))
    return f"{x:,.1f}"


def _delta(key: str, m: dict) -> tuple[str, str]:
    d = m.get("delta")
    if d is None:
        return "n/a", "n/a"
    if key.endswith("_pct"):
        text = f"{d:+.1f} pp"
    elif key in _TIME_KEYS_WITHOUT_US:
        text = f"{int(d):+,}" if float(d).is_integer() else f"{d:+,.1f}"
    else:
        text = f"{d:+,.1f}"
    pct = "n/a" if m.get("delta_pct") is None else f"{m['delta_pct']:+.1f}%"
    return minus(text), minus(pct)


def _short(name, width: int = NAME_WIDTH) -> str:
    name = "" if name is None else str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def _us(x) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _header(doc: dict) -> list[str]:
    b, a = doc["before"], doc["after"]
    if doc["basis"] == "per_step":
        basis = (f"per step: mean over {_n(len(b['steps']), 'step')} before and {len(a['steps'])} after, "
                 f"then over ranks ({len(b['ranks'])} before, {len(a['ranks'])} after)")
    else:
        basis = (f"whole trace (step windows missing on "
                 f"{'both sides' if not b['steps'] and not a['steps'] else 'one side'}), "
                 f"mean over ranks ({len(b['ranks'])} before, {len(a['ranks'])} after)")
    return [f"before: {b['path']}", f"after:  {a['path']}", f"basis: {basis}; kernels and gaps "
            f"{doc['units']['kernels']}, gaps of at least {doc['min_gap_us']:g} µs"]


def _metric_rows(doc: dict) -> list[list[str]]:
    rows = [["metric", "before", "after", "delta", "delta %", ""]]
    for key, m in doc["metrics"].items():
        d, p = _delta(key, m)
        rows.append([key, _value(key, m["before"]), _value(key, m["after"]), d, p,
                     "*" if m.get("significant") else ""])
    return rows


def shown_kernels(doc: dict) -> tuple[list[dict], int]:
    """Kernel entries to list (not same, not absorbed: those appear under their host), at most
    ``KERNELS_SHOWN``, and how many more there are."""
    changes = [k for k in doc["kernels"] if k["status"] != "same" and not k.get("absorbed_into")]
    return changes[:KERNELS_SHOWN], max(0, len(changes) - KERNELS_SHOWN)


def _counts(k: dict) -> str:
    return f"{count_text(k['before_count'])} → {count_text(k['after_count'])}"


def _absorbed_text(doc: dict, k: dict) -> str | None:
    if not k["absorbed"]:
        return None
    by_key = {e["key"]: e for e in doc["kernels"]}
    parts = []
    for key in k["absorbed"]:
        e = by_key.get(key)
        detail = f" ({count_text(e['before_count'])}, {_us(e['before_us'])} µs)" if e else ""
        parts.append(f"{key}{detail}")
    return "absorbed " + ", ".join(parts)


def _kernel_notes(doc: dict, k: dict, quote: str = "") -> list[str]:
    """What a kernel row's note says: the name it was matched from and what it absorbed."""
    notes = []
    if k["matched_from"]:
        notes.append(f"renamed from {quote}{k['matched_from']}{quote}")
    absorbed = _absorbed_text(doc, k)
    if absorbed:
        notes.append(absorbed)
    return notes


def _select_backward_text(doc: dict) -> str:
    m = doc["metrics"]

    def side(which):
        return (f"{count_text(m['select_backward_kernels'][which])} dedicated "
                f"({_us(m['select_backward_us'][which])} µs), "
                f"{count_text(m['select_backward_fused_kernels'][which])} fused")

    return f"{side('before')} → {side('after')}"


def _sm_comm_lines(doc: dict) -> list[str]:
    m = doc["metrics"]
    if not m["comm_kernel_count"]["before"] and not m["comm_kernel_count"]["after"]:
        return ["no comm kernels on either side"]
    out = []
    for key, words in (("sm_contention_us", "comm on full SMs"), ("comm_queue_us", "comm queueing"),
                       ("comm_queue_full_sm_us", "comm queueing while compute held every SM")):
        out.append(f"{words}: {_us(m[key]['before'])} → {_us(m[key]['after'])} µs")
    overlap = m["comp_comm_overlap_pct"]
    out.append(f"comm/compute overlap: {_value('comp_comm_overlap_pct', overlap['before'])} → "
               f"{_value('comp_comm_overlap_pct', overlap['after'])}")
    return out


def _gap_rows(doc: dict) -> tuple[list[list[str]], int]:
    """Table rows of the gap groups that are not ``same`` (at most ``GAP_GROUPS_SHOWN``), and
    how many more there are."""
    rows = [["status", "kind", "phase", "before n", "before µs", "after n", "after µs", "Δµs", ""]]
    changed = [g for g in doc["gaps"] if g["status"] != "same"]
    for g in changed[:GAP_GROUPS_SHOWN]:
        rows.append([g["status"], g["kind"], _short(g["phase"] or "-", 48),
                     count_text(round(g["before"]["count"], 1)), _us(g["before"]["total_us"]),
                     count_text(round(g["after"]["count"], 1)), _us(g["after"]["total_us"]),
                     minus(f"{g['delta_us']:+,.1f}"), "*" if g.get("significant") else ""])
    return rows, max(0, len(changed) - GAP_GROUPS_SHOWN)


# ----------------------------------------------------------------------------------- text




def render_text(doc: dict) -> str:
    """The diff as plain text, verdict last."""
    lines = ["speedtrace diff", *_header(doc)]
    lines += [f"warning: {w}" for w in doc["warnings"]]
    lines += ["", "metrics (* = larger than the per-step noise):"]
    lines += text_table(_metric_rows(doc), right={1, 2, 3, 4}, indent="  ")

    shown, more = shown_kernels(doc)
    lines += ["", "kernel changes (largest |Δµs| first):"]
    if shown:
        rows = [["status", "kernel", "count", "before µs", "after µs", "Δµs", ""]]
        notes = {}
        for k in shown:
            rows.append([k["status"], _short(k["key"]), _counts(k), _us(k["before_us"]),
                         _us(k["after_us"]), minus(f"{k['delta_us']:+,.1f}"),
                         "*" if k.get("significant") else ""])
            notes[len(rows) - 1] = _kernel_notes(doc, k)
        table = text_table(rows, right={3, 4, 5}, indent="  ")
        for i, line in enumerate(table):
            lines.append(line)
            lines += [f"      {n}" for n in notes.get(i, [])]
        if more:
            lines.append(f"  ... {more} more kernel changes (see --format json)")
    else:
        lines.append("  none")

    lines += ["", f"select_backward: {_select_backward_text(doc)}"]
    lines += ["", "SMs and comm:"] + [f"  {s}" for s in _sm_comm_lines(doc)]
    gap_rows, more = _gap_rows(doc)
    lines += ["", "gap groups that changed (by kind and phase):"]
    lines += text_table(gap_rows, right={3, 4, 5, 6, 7}, indent="  ") if len(gap_rows) > 1 else ["  none"]
    if more:
        lines.append(f"  ... {more} more gap groups (see --format json)")
    lines += ["", "verdict:"] + [f"  {v}" for v in doc["verdict"].splitlines()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- markdown






def render_markdown(doc: dict) -> str:
    """The diff as GitHub-flavoured markdown, verdict last."""
    out = ["# speedtrace diff", ""]
    out += [f"- {md_escape(line)}" for line in _header(doc)] + [""]
    out += [f"> **warning:** {md_escape(w)}  " for w in doc["warnings"]]
    if doc["warnings"]:
        out.append("")
    out += ["## Metrics", "", "`*`: larger than the per-step noise.", ""]
    out += md_table(_metric_rows(doc), right={1, 2, 3, 4}) + [""]

    shown, more = shown_kernels(doc)
    out += ["## Kernel changes", ""]
    if shown:
        rows = [["status", "kernel", "count", "before µs", "after µs", "Δµs", "", "note"]]
        for k in shown:
            notes = _kernel_notes(doc, k, quote="`")
            rows.append([k["status"], f"`{_short(k['key'], 90)}`", _counts(k), _us(k["before_us"]),
                         _us(k["after_us"]), minus(f"{k['delta_us']:+,.1f}"),
                         "*" if k.get("significant") else "", "; ".join(notes)])
        out += md_table(rows, right={3, 4, 5}) + [""]
        if more:
            out += [f"... {more} more kernel changes (see `--format json`).", ""]
    else:
        out += ["None.", ""]

    out += ["## select_backward", "", md_escape(_select_backward_text(doc)), ""]
    out += ["## SMs and comm", ""] + [f"- {md_escape(s)}" for s in _sm_comm_lines(doc)] + [""]
    gap_rows, more = _gap_rows(doc)
    out += ["## Gap groups that changed", ""]
    out += md_table(gap_rows, right={3, 4, 5, 6, 7}) + [""] if len(gap_rows) > 1 else ["None.", ""]
    if more:
        out += [f"... {more} more gap groups (see `--format json`).", ""]
    out += ["## Verdict", ""] + [f"{md_escape(v)}  " for v in doc["verdict"].splitlines()]
    return "\n".join(out) + "\n"
