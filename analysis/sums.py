"""The additive record behind every total: ``Sums`` of one selection of a device's GPU activity.

Everything a report, a diff or a figure says about a (rank, device, step) is either one of these
sums (µs of a union of intervals, counts, Σ occupancy·duration, the integral of claimed SMs) or a
ratio of two of them. Sums add across steps and average across ranks; ratios do not, so they are
computed in exactly one place, ``ratios``, from whatever sums a caller has pooled. ``totals``
gives the totals object of the report JSON (docs/metrics.md "Totals") in its documented order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis import select_backward as sb
from speedtrace.analysis.comm_queue import comm_queue_totals

# The totals object of the report JSON, in order (docs/metrics.md).
TOTAL_KEYS = (
    "span_us", "busy_us", "idle_us", "compute_us", "comm_us", "memory_us", "overlap_us",
    "exposed_comm_us", "exposed_memory_us", "comp_comm_overlap_pct", "kernel_count",
    "comm_kernel_count", "est_sm_efficiency_pct", "achieved_occupancy_pct",
    "achieved_occupancy_coverage_pct", "sm_contention_us",
    "comm_queue_us", "comm_queue_full_sm_us", "comm_wait_inputs_us", "select_backward_kernels",
    "select_backward_us",
    "select_backward_fused_kernels", "select_backward_cpu_ops",
)
RATIO_KEYS = ("comp_comm_overlap_pct", "est_sm_efficiency_pct", "achieved_occupancy_pct",
              "achieved_occupancy_coverage_pct")


@dataclass
class Sums:
    """Additive quantities of a selection of GPU events (µs unless named otherwise).

    ``sm_busy_us`` is ∫ min(Σ blocks/SM of running kernels, 1) dt, None when no kernel of the
    selection has a known blocks/SM (unknown is not idle). ``occ_weighted_us`` is Σ occupancy·dur
    over the compute kernels that carry an achieved occupancy estimate, ``occ_weight_us`` their
    Σ dur and ``compute_kernel_us`` the Σ dur of every compute kernel (the estimate's coverage).
    ``select_backward_cpu_ops`` is None where the step source cannot place CPU ops in steps.
    """

    span_us: float = 0.0
    busy_us: float = 0.0
    idle_us: float = 0.0
    compute_us: float = 0.0
    comm_us: float = 0.0
    memory_us: float = 0.0
    overlap_us: float = 0.0
    exposed_comm_us: float = 0.0
    exposed_memory_us: float = 0.0
    kernel_count: float = 0
    comm_kernel_count: float = 0
    sm_busy_us: float | None = None
    occ_weighted_us: float = 0.0
    occ_weight_us: float = 0.0
    compute_kernel_us: float = 0.0
    sm_contention_us: float = 0.0
    comm_queue_us: float = 0.0
    comm_queue_full_sm_us: float = 0.0
    comm_wait_inputs_us: float = 0.0
    select_backward_kernels: float = 0
    select_backward_us: float = 0.0
    select_backward_fused_kernels: float = 0
    select_backward_cpu_ops: float | None = None


SUM_FIELDS = tuple(f.name for f in fields(Sums))


def ratios(s: Sums) -> dict:
    """The three percentages of metrics.md from their parts (None where a part is missing)."""
    return {
        "comp_comm_overlap_pct": 100.0 * s.overlap_us / s.comm_us if s.comm_us > 0 else None,
        "est_sm_efficiency_pct": (100.0 * s.sm_busy_us / s.span_us
                                  if s.span_us > 0 and s.sm_busy_us is not None else None),
        "achieved_occupancy_pct": s.occ_weighted_us / s.occ_weight_us if s.occ_weight_us > 0 else None,
        "achieved_occupancy_coverage_pct": (100.0 * s.occ_weight_us / s.compute_kernel_us
                                            if s.compute_kernel_us > 0 else None),
    }


def totals(s: Sums) -> dict:
    """The totals object of the report JSON: the sums and their ratios, in ``TOTAL_KEYS`` order."""
    r = ratios(s)
    return {k: r[k] if k in r else getattr(s, k) for k in TOTAL_KEYS}


def mean(items: list[Sums]) -> Sums:
    """The field-wise mean of several ``Sums`` (steps of a rank, or ranks of a side); a field
    that is None in some of them is the mean of the others, None in all stays None."""
    out = {}
    for name in SUM_FIELDS:
        known = [getattr(s, name) for s in items if getattr(s, name) is not None]
        out[name] = math.fsum(known) / len(known) if known else None
    return Sums(**out)


def sums_of(tl, sel: np.ndarray, select_backward_cpu_ops: int | None) -> Sums:
    """The ``Sums`` of the events ``sel`` (a boolean mask over a ``DeviceTimeline``)."""
    start, end = tl.start[sel], tl.end[sel]
    comp, comm, mem = tl.is_compute[sel], tl.is_comm[sel], tl.is_memory[sel]
    kind = tl.select_backward[sel]
    dedicated = kind == sb.DEDICATED
    out = Sums(kernel_count=int(tl.is_kernel[sel].sum()), comm_kernel_count=int(comm.sum()),
               select_backward_kernels=int(dedicated.sum()),
               select_backward_us=float((end - start)[dedicated].sum()),
               select_backward_fused_kernels=int((kind == sb.FUSED).sum()),
               select_backward_cpu_ops=select_backward_cpu_ops)
    if len(start) == 0:
        return out

    span = float(end.max() - start.min())
    comp_u = iv.union(start[comp], end[comp])
    comm_u = iv.union(start[comm], end[comm])
    mem_u = iv.union(start[mem], end[mem])
    busy = iv.length(iv.union(start, end))
    out.span_us = span
    out.busy_us = busy
    out.idle_us = span - busy
    out.compute_us = iv.length(comp_u)
    out.comm_us = iv.length(comm_u)
    out.memory_us = iv.length(mem_u)
    out.overlap_us = iv.length(iv.intersect(comm_u, comp_u))
    out.exposed_comm_us = out.comm_us - out.overlap_us
    out.exposed_memory_us = iv.length(iv.subtract(mem_u, iv.merge(comp_u, comm_u)))

    b = tl.b[sel]
    known = tl.is_kernel[sel] & ~np.isnan(b)
    if known.any():
        x, f = iv.step_function(start[known], end[known], b[known])
        out.sm_busy_us = iv.integral(x, np.clip(f, 0.0, 1.0))

    occ = tl.occupancy[sel]
    has_occ = comp & ~np.isnan(occ)
    weight = (end - start)[has_occ]
    out.occ_weighted_us = float(np.sum(occ[has_occ] * weight))
    out.occ_weight_us = float(weight.sum())
    out.compute_kernel_us = float((end - start)[comp].sum())

    x, f = iv.step_function(start[comp], end[comp], tl.sm_weight[sel][comp])
    out.sm_contention_us = iv.length(iv.intersect(comm_u, iv.where(x, f >= tl.sm_threshold)))

    # The comm queue split at the ready time, as unions per comm stream (comm_queue).
    if comm.any():
        queue = comm_queue_totals(tl, sel)
        out.comm_queue_us = queue["comm_queue_us"]
        out.comm_queue_full_sm_us = queue["comm_queue_full_sm_us"]
        out.comm_wait_inputs_us = queue["comm_wait_inputs_us"]
    return out
