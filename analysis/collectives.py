"""One row per collective (comm kernel) of a ``DeviceTimeline`` (metrics.md "Collectives").

A row says what the collective was (``kind``; from ``record_param_comms``: dtype, element
counts, group, message bytes and the nccl-tests bandwidths), when it ran (``step``, ``start_us``
from the first GPU start of its step, ``dur_us``, ``exposed_us``: the part no compute kernel
overlaps), where it was launched from (``launch_phase``) and what it waited for before it ran
(``queue_us`` = ``wait_inputs_us`` + ``wait_sms_us``, split at the ready time of ``comm_queue``).
A kernel launched before the profiler window has no launch in the trace: its phase and queue
fields are null (and its step too when steps come from CPU annotations).

The collective's parameters come from the kernel's own args (older traces copy them there), else
from the ``record_param_comms`` CPU op with the launch's ``External id``, else from the innermost
CPU op around the launch when that is ``record_param_comms``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis.comm_queue import comm_queue_totals, comm_readiness  # noqa: F401
from speedtrace.analysis.events import Cat
from speedtrace.analysis.links import INDUCTOR_RANGE, PROFILER_STEP, Nesting, thread_keys
from speedtrace.analysis.memo import keep_last
from speedtrace.analysis.timeline import cpu_context

RECORD_PARAM_COMMS = "record_param_comms"
NCCL_RANGE = re.compile(r"^nccl:")
AUTOGRAD_OP = "autograd::engine::evaluate_function"
BACKWARD = "backward"

# Checked in order on the lower-cased name without underscores (reducescatter before reduce).
_KINDS = (
    ("allreduce", "all_reduce"), ("reducescatter", "reduce_scatter"), ("allgather", "all_gather"),
    ("alltoall", "all_to_all"), ("broadcast", "broadcast"), ("sendrecv", "send_recv"),
    ("send", "send_recv"), ("recv", "send_recv"), ("reduce", "reduce"), ("gather", "gather"),
    ("scatter", "scatter"), ("barrier", "barrier"),
)
# c10 ScalarType names as record_param_comms writes them -> bytes per element.
DTYPE_BYTES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
    "Byte": 1, "Bool": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8, "ComplexFloat": 8,
    "ComplexDouble": 16, "ComplexHalf": 4, "Float8_e4m3fn": 1, "Float8_e5m2": 1,
    "Float8_e4m3fnuz": 1, "Float8_e5m2fnuz": 1, "Float8_e8m0fnu": 1,
}
ROW_KEYS = (
    "name", "kind", "step", "stream", "launch_phase", "start_us", "dur_us", "exposed_us", "queue_us",
    "wait_inputs_us", "wait_sms_us", "wait_sms_full_sm_us", "dtype", "in_nelems", "out_nelems",
    "group_size", "process_group", "bytes", "algbw_gbps", "busbw_gbps",
)


def kind_of(name: str | None) -> str | None:
    """The collective kind named by a kernel name or a ``Collective name`` (None: not one)."""
    if not name:
        return None
    flat = name.lower().replace("_", "")
    flat = flat.replace("ncclkernel", "").replace("nccldevkernel", "").replace("ncclsymkdevkernel", "")
    for needle, kind in _KINDS:
        if needle in flat:
            return kind
    return None


def bus_factor(kind: str, n: int | None) -> float | None:
    """nccl-tests' bus-bandwidth factor for ``kind`` on ``n`` ranks (None: not defined)."""
    if kind in ("broadcast", "reduce", "send_recv"):
        return 1.0
    if not n or n < 1:
        return None
    if kind == "all_reduce":
        return 2.0 * (n - 1) / n
    if kind in ("reduce_scatter", "all_gather", "all_to_all"):
        return (n - 1) / n
    return None


def message_bytes(args: dict) -> int | None:
    """The message size nccl-tests' bandwidths use: the larger of the input and output buffers
    (an all-gather's output, a reduce-scatter's input), from ``record_param_comms``."""
    size = DTYPE_BYTES.get(args.get("dtype") or "")
    counts = [c for c in (args.get("in_nelems"), args.get("out_nelems")) if isinstance(c, int) and c >= 0]
    if size is None or not counts:
        return None
    return max(counts) * size


@dataclass
class CollectiveTable:
    """Every comm kernel of one (rank, device): what ``cross_rank`` needs without the timeline."""

    rank: object           # the RankTrace
    device_id: int
    step_source: str
    idx: np.ndarray        # timeline indices (ascending start)
    start: np.ndarray      # µs after rank.origin_ts_us
    end: np.ndarray
    launch: np.ndarray     # launch rows (-1)
    args_row: np.ndarray   # rows holding the collective parameters (-1)
    rows: list[dict]       # ROW_KEYS per kernel


def _args_rows(tl, idx: np.ndarray) -> np.ndarray:
    """The event row holding each comm kernel's collective parameters (-1)."""
    rank, ev = tl.rank, tl.rank.events
    out = np.full(len(idx), -1, dtype=np.int64)
    own = tl.rows[idx]
    has_own = np.array([bool(rank.args_of(int(r)).get("collective")) for r in own], dtype=bool)
    out[has_own] = own[has_own]
    if RECORD_PARAM_COMMS not in ev.names:
        return out
    code = ev.names.index(RECORD_PARAM_COMMS)
    ops = np.flatnonzero((ev.cat == Cat.CPU_OP) & (ev.name == code))
    by_id = {(int(p), int(x)): int(r) for p, x, r in zip(ev.pid[ops], ev.external_id[ops], ops) if x >= 0}
    launch = tl.launch[idx]
    for j in np.flatnonzero(~has_own & (launch >= 0)).tolist():
        L = int(launch[j])
        r = by_id.get((int(ev.pid[L]), int(ev.external_id[L]))) if ev.external_id[L] >= 0 else None
        if r is None:
            op = int(tl.cpu_op[idx[j]])
            r = op if op >= 0 and ev.name[op] == code else None
        if r is not None:
            out[j] = r
    return out


def _launch_phases(tl, launch: np.ndarray) -> list[str | None]:
    """The innermost user annotation around each launch other than nccl:* ranges (and
    ProfilerStep#N / Inductor graph ranges): on the launching thread; else ``backward`` when the
    launch ran inside an autograd engine function; else on any thread of the launching process."""
    ev = tl.rank.events
    skip_name = np.array([bool(PROFILER_STEP.match(n) or INDUCTOR_RANGE.match(n) or NCCL_RANGE.match(n))
                          for n in ev.names], dtype=bool)
    skip = skip_name[ev.name] if len(ev.names) else np.zeros(len(ev), bool)
    rows = np.flatnonzero((ev.cat == Cat.USER_ANNOTATION) & ~skip)
    nest = Nesting(ev.ts[rows], ev.ts[rows] + ev.dur[rows], thread_keys(ev.pid[rows], ev.tid[rows]), rows)
    out: list[str | None] = [None] * len(launch)
    has = np.flatnonzero(launch >= 0)
    if len(has) == 0:
        return out
    L = launch[has]
    t, keys = ev.ts[L], thread_keys(ev.pid[L], ev.tid[L])
    own = nest.innermost(t, keys)

    ctx = cpu_context(tl.rank)
    ops = ctx.ops
    autograd_name = np.array([n.startswith(AUTOGRAD_OP) for n in ev.names], dtype=bool)
    is_autograd = autograd_name[ev.name[ops.id]] if len(ev.names) else np.zeros(len(ops.id), bool)
    pos = ops.innermost(t, keys)
    in_autograd = np.zeros(len(L), dtype=bool)
    in_autograd[pos >= 0] = ops.inherited(is_autograd)[pos[pos >= 0]]

    for j, (p, autograd) in enumerate(zip(own.tolist(), in_autograd.tolist())):
        if p >= 0:
            out[has[j]] = ev.names[ev.name[nest.id[p]]]
        elif autograd:
            out[has[j]] = BACKWARD
        else:  # like a gap's phase: the latest-starting annotation open on any thread of the pid
            best = None
            for key, (lo, _) in nest.bounds.items():
                if ev.pid[nest.id[lo]] != ev.pid[L[j]]:
                    continue
                q = int(nest.innermost(t[j:j + 1], np.array([key]))[0])
                if q >= 0 and (best is None or nest.start[q] > nest.start[best] or (
                        nest.start[q] == nest.start[best] and nest.end[q] < nest.end[best])):
                    best = q
            if best is not None:
                out[has[j]] = ev.names[ev.name[nest.id[best]]]
    return out


def _optional_int(v):
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


@keep_last()
def collective_table(tl) -> CollectiveTable:
    """Every comm kernel of the timeline with its row (kept for the last timeline)."""
    rank = tl.rank
    ready = comm_readiness(tl)
    idx = ready.idx
    start, end = tl.start[idx], tl.end[idx]
    dur = end - start
    comp = np.flatnonzero(tl.is_compute)
    exposed = dur - iv.overlap_each(start, end, iv.union(tl.start[comp], tl.end[comp]))
    step_of = tl.steps.step_of
    step = step_of[idx]
    step_start = {int(n): float(tl.start[step_of == n].min()) for n in np.unique(step) if n >= 0}
    launch = tl.launch[idx]
    phases = _launch_phases(tl, launch)
    arg_rows = _args_rows(tl, idx)
    has = ~np.isnan(ready.ready)
    wait_inputs = ready.ready - ready.queue_from
    wait_sms = start - ready.ready
    full = iv.overlap_each(np.where(has, ready.ready, 0.0), np.where(has, start, 0.0), tl.full_sm)

    rows = []
    for j in range(len(idx)):
        a = rank.args_of(int(arg_rows[j])) if arg_rows[j] >= 0 else {}
        kind = kind_of(tl.name(int(idx[j]))) or kind_of(a.get("collective")) or "other"
        nbytes = message_bytes(a)
        group = _optional_int(a.get("group_size"))
        d = float(dur[j])
        algbw = nbytes / d / 1e3 if nbytes is not None and d > 0 else None
        factor = bus_factor(kind, group)
        n = int(step[j])
        pg = a.get("pg_name")
        rows.append({
            "name": tl.name(int(idx[j])),
            "kind": kind,
            "step": n if n >= 0 else None,
            "stream": int(ready.stream[j]),
            "launch_phase": phases[j],
            "start_us": float(start[j] - step_start[n]) if n >= 0 else None,
            "dur_us": d,
            "exposed_us": float(exposed[j]),
            "queue_us": float(start[j] - ready.queue_from[j]) if has[j] else None,
            "wait_inputs_us": float(wait_inputs[j]) if has[j] else None,
            "wait_sms_us": float(wait_sms[j]) if has[j] else None,
            "wait_sms_full_sm_us": float(full[j]) if has[j] else None,
            "dtype": a.get("dtype"),
            "in_nelems": _optional_int(a.get("in_nelems")),
            "out_nelems": _optional_int(a.get("out_nelems")),
            "group_size": group,
            "process_group": str(pg) if pg is not None else None,
            "bytes": nbytes,
            "algbw_gbps": algbw,
            "busbw_gbps": algbw * factor if algbw is not None and factor is not None else None,
        })
    return CollectiveTable(rank, tl.device_id, tl.steps.source, idx, start, end, launch, arg_rows, rows)


def collectives(tl, sel: np.ndarray | None = None) -> list[dict]:
    """The rows (``ROW_KEYS``) of the comm kernels selected by the boolean mask ``sel`` over the
    timeline (all when None), in start order."""
    table = collective_table(tl)
    if sel is None:
        return [dict(r) for r in table.rows]
    keep = np.asarray(sel, bool)[table.idx]
    return [dict(r) for r, k in zip(table.rows, keep.tolist()) if k]


def top_by_exposed(rows: list[dict], n: int | None) -> list[dict]:
    """The rows with the most exposed time first (ties: earlier start), at most n."""
    order = sorted(rows, key=lambda r: -(r.get("exposed_us") or 0.0))
    return order if n is None else order[:max(n, 0)]


def phase_summary(rows: list[dict]) -> list[dict]:
    """Per launch phase (None: unknown): kinds, count, bytes (of the rows that give it; None when
    none does), time, exposed time and the two queue parts; most exposed first."""
    out: dict = {}
    for r in rows:
        p = out.setdefault(r.get("launch_phase"), {"launch_phase": r.get("launch_phase"), "count": 0,
                                                   "bytes": None, "dur_us": 0.0, "exposed_us": 0.0,
                                                   "wait_inputs_us": 0.0, "wait_sms_us": 0.0, "kinds": set()})
        p["count"] += 1
        if r.get("bytes") is not None:
            p["bytes"] = (p["bytes"] or 0) + r["bytes"]
        p["dur_us"] += r.get("dur_us") or 0.0
        p["exposed_us"] += r.get("exposed_us") or 0.0
        p["wait_inputs_us"] += r.get("wait_inputs_us") or 0.0
        p["wait_sms_us"] += r.get("wait_sms_us") or 0.0
        p["kinds"].add(str(r.get("kind")))
    result = sorted(out.values(), key=lambda p: (-p["exposed_us"], str(p["launch_phase"])))
    for p in result:
        p["kinds"] = sorted(p["kinds"])
    return result
