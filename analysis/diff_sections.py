"""A diff document (``diff.build_diff``) as a ``Document`` of sections; it only formats it.

Order: a short header (paths, basis, steps per side, warnings), the metric table, the kernel
changes (not the ``same`` ones; absorbed eager kernels as notes under the kernel that absorbed
them), select_backward, SM contention and comm queueing, the gap groups that changed, the
verdict. Section keys: ``header``, ``metrics``, ``kernels``, ``select_backward``, ``sm_comm``,
``collectives`` (when either side has some), ``gaps``, ``verdict``.
"""

from __future__ import annotations

from speedtrace.analysis.fmt import count_text, minus, short, us1
from speedtrace.analysis.sections import Document, Para, Section, Table

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
        detail = f" ({count_text(e['before_count'])}, {us1(e['before_us'])} µs)" if e else ""
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
                f"({us1(m['select_backward_us'][which])} µs), "
                f"{count_text(m['select_backward_fused_kernels'][which])} fused")

    return f"{side('before')} → {side('after')}"


def _sm_comm_lines(doc: dict) -> list[str]:
    m = doc["metrics"]
    if not m["comm_kernel_count"]["before"] and not m["comm_kernel_count"]["after"]:
        return ["no comm kernels on either side"]
    out = []
    for key, words in (("sm_contention_us", "comm on full SMs"),
                       ("comm_queue_us", "comm queueing (ready, not started)"),
                       ("comm_queue_full_sm_us", "comm queueing while compute held every SM"),
                       ("comm_wait_inputs_us", "comm waiting for inputs")):
        out.append(f"{words}: {us1(m[key]['before'])} → {us1(m[key]['after'])} µs")
    overlap = m["comp_comm_overlap_pct"]
    out.append(f"comm/compute overlap: {_value('comp_comm_overlap_pct', overlap['before'])} → "
               f"{_value('comp_comm_overlap_pct', overlap['after'])}")
    return out


def _size(nbytes) -> str:
    if nbytes is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:,.0f} B"


def _collective_blocks(doc: dict) -> list:
    """Per kind: count, size, time and exposed time before → after; then the launch-phase changes."""
    c = doc.get("collectives") or {}
    if not c.get("kinds"):
        return [Para("no collectives on either side")]
    rows = [[k["kind"], f"{count_text(round(k['before_count'], 1))} → {count_text(round(k['after_count'], 1))}",
             f"{_size(k['before_bytes'])} → {_size(k['after_bytes'])}", us1(k["before_us"]), us1(k["after_us"]),
             us1(k["before_exposed_us"]), us1(k["after_exposed_us"]),
             minus(f"{k['after_exposed_us'] - k['before_exposed_us']:+,.1f}")] for k in c["kinds"]]
    blocks: list = [Table(["kind", "count", "size", "before µs", "after µs", "before exposed µs",
                           "after exposed µs", "Δ exposed µs"], rows, right=frozenset({3, 4, 5, 6, 7}))]
    changes = c.get("phase_changes") or []
    if changes:
        blocks.append(Para("launch phase changed:"))
        blocks.append(Table(["kind", "step", "before phase", "after phase", "count"],
                            [[p["kind"], str(p["step"]), short(p["before_phase"] or "-", 40),
                              short(p["after_phase"] or "-", 40), str(p["count"])] for p in changes],
                            right=frozenset({1, 4}), code=frozenset({2, 3})))
    return blocks


def _gap_rows(doc: dict) -> tuple[list[list[str]], int]:
    """Table rows of the gap groups that are not ``same`` (at most ``GAP_GROUPS_SHOWN``), and
    how many more there are."""
    rows = [["status", "kind", "phase", "before n", "before µs", "after n", "after µs", "Δµs", ""]]
    changed = [g for g in doc["gaps"] if g["status"] != "same"]
    for g in changed[:GAP_GROUPS_SHOWN]:
        rows.append([g["status"], g["kind"], short(g["phase"] or "-", 48),
                     count_text(round(g["before"]["count"], 1)), us1(g["before"]["total_us"]),
                     count_text(round(g["after"]["count"], 1)), us1(g["after"]["total_us"]),
                     minus(f"{g['delta_us']:+,.1f}"), "*" if g.get("significant") else ""])
    return rows, max(0, len(changed) - GAP_GROUPS_SHOWN)


# -------------------------------------------------------------------------------- document


def diff_sections(doc: dict) -> Document:
    """The ``Document`` of a diff dict: header, metrics, kernel changes, select_backward, SMs
    and comm, gap groups, verdict."""
    out = Document("diff", "speedtrace diff", "", warnings=list(doc["warnings"]))
    out.sections.append(Section("header", "", [Para(line) for line in _header(doc)]))
    out.sections.append(Section("metrics", "metrics (* = larger than the per-step noise)", [Table(
        *_split(_metric_rows(doc)), right=frozenset({1, 2, 3, 4}), code=frozenset())]))

    shown, more = shown_kernels(doc)
    if shown:
        rows, notes = [], {}
        for k in shown:
            rows.append([k["status"], short(k["key"], NAME_WIDTH), _counts(k), us1(k["before_us"]),
                         us1(k["after_us"]), minus(f"{k['delta_us']:+,.1f}"),
                         "*" if k.get("significant") else ""])
            found = _kernel_notes(doc, k)
            if found:
                notes[len(rows) - 1] = found
        block = Table(["status", "kernel", "count", "before µs", "after µs", "Δµs", ""], rows,
                      right=frozenset({3, 4, 5}), code=frozenset({1}), notes=notes,
                      more=f"... {more} more kernel changes (see --format json)" if more else None)
    else:
        block = Para("none")
    out.sections.append(Section("kernels", "kernel changes (largest |Δµs| first)", [block]))
    out.sections.append(Section("select_backward", "select_backward", [Para(_select_backward_text(doc))]))
    out.sections.append(Section("sm_comm", "SMs and comm", [Para(s) for s in _sm_comm_lines(doc)]))
    if (doc.get("collectives") or {}).get("kinds"):
        units = (doc.get("units") or {}).get("collectives", "")
        out.sections.append(Section("collectives", f"collectives ({units})" if units else "collectives",
                                    _collective_blocks(doc)))
    gap_rows, more = _gap_rows(doc)
    if len(gap_rows) > 1:
        block = Table(*_split(gap_rows), right=frozenset({3, 4, 5, 6, 7}), code=frozenset({2}),
                      more=f"... {more} more gap groups (see --format json)" if more else None)
    else:
        block = Para("none")
    out.sections.append(Section("gaps", "gap groups that changed (by kind and phase)", [block]))
    out.sections.append(Section("verdict", "verdict", [Para(v) for v in doc["verdict"].splitlines()]))
    return out


def _split(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    return rows[0], rows[1:]
