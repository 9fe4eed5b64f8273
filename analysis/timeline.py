"""The GPU activity of one (rank, device), with everything the metrics look up per event.

``device_timeline`` gathers the device's kernels, memcpys and memsets (sorted by start) with
their class (compute / comm / memory), blocks per SM, launch, step, enclosing phase and CPU op,
and select_backward kind: one numpy array per property, one entry per event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from speedtrace.analysis import intervals as iv
from speedtrace.analysis import select_backward as sb
from speedtrace.analysis.events import GPU_ACTIVITY, Cat, RankTrace
from speedtrace.analysis.links import CpuContext, StepWindows, launch_rows, step_windows
from speedtrace.analysis.memo import keep_last

COMM = re.compile(r"nccl|rccl", re.IGNORECASE)


@dataclass
class DeviceTimeline:
    rank: RankTrace
    device_id: int
    num_sms: int | None
    rows: np.ndarray          # event rows in rank.events, sorted by start
    start: np.ndarray
    end: np.ndarray
    is_kernel: np.ndarray
    is_comm: np.ndarray       # kernels named /nccl|rccl/i
    is_compute: np.ndarray    # every other kernel
    is_memory: np.ndarray     # memcpy and memset
    b: np.ndarray             # blocks per SM (NaN: unknown)
    occupancy: np.ndarray     # achieved occupancy % (NaN: not estimated, Kineto's 0 included)
    sm_weight: np.ndarray     # per kernel, in units where "every SM claimed" is sm_threshold
    sm_threshold: float
    launch: np.ndarray        # row of the launch call (-1)
    steps: StepWindows
    phase: np.ndarray         # row of the innermost user_annotation around the launch (-1)
    cpu_op: np.ndarray        # row of the innermost cpu_op on the launch thread (-1)
    select_backward: np.ndarray  # select_backward.NONE / DEDICATED / FUSED
    full_sm: iv.Union         # {t : Σ b over running compute kernels ≥ 1}, whole device

    @property
    def names(self) -> list[str]:
        return self.rank.events.names

    def name(self, i: int) -> str:
        """Name of the i-th event of this timeline."""
        return self.rank.events.names[self.rank.events.name[self.rows[i]]]

    def row_name(self, row: int) -> str | None:
        """Name of a rank event row (None for -1)."""
        return None if row < 0 else self.rank.events.names[self.rank.events.name[row]]


@keep_last(key=lambda rank: rank.events)
def cpu_context(rank: RankTrace) -> CpuContext:
    """The rank's CPU nesting, built once per event table (devices of a rank share it)."""
    return CpuContext(rank.events)


def device_timeline(rank: RankTrace, device_id: int, run=None) -> DeviceTimeline:
    """Everything per GPU event of ``device_id`` on ``rank`` (see ``DeviceTimeline``)."""
    ev = rank.events
    rows = np.flatnonzero(np.isin(ev.cat, GPU_ACTIVITY) & (ev.pid == device_id))
    rows = rows[np.argsort(ev.ts[rows], kind="stable")]
    start = ev.ts[rows]
    dur = np.where(np.isnan(ev.dur[rows]), 0.0, np.maximum(ev.dur[rows], 0.0))
    end = start + dur
    cat = ev.cat[rows]
    is_kernel = cat == Cat.KERNEL
    comm_code = np.array([bool(COMM.search(n)) for n in ev.names], dtype=bool)
    is_comm = is_kernel & (comm_code[ev.name[rows]] if len(ev.names) else False)
    is_compute = is_kernel & ~is_comm
    is_memory = ~is_kernel

    info = rank.devices.get(device_id)
    num_sms = info.num_sms if info is not None and info.num_sms and info.num_sms > 0 else None
    b_arg = ev.blocks_per_sm[rows]
    grid = ev.grid_blocks[rows].astype(np.float64)
    grid_known = grid > 0
    if num_sms:
        b = np.where(np.isnan(b_arg), np.where(grid_known, grid / num_sms, np.nan), b_arg)
        # Compare with "every SM" in blocks: exact for known grids (the printed b is rounded).
        sm_weight = np.where(grid_known, grid, np.where(np.isnan(b_arg), 0.0, b_arg * num_sms))
        sm_threshold = float(num_sms)
    else:
        b = b_arg.copy()
        sm_weight = np.where(np.isnan(b_arg), 0.0, b_arg)
        sm_threshold = 1.0
    b[~is_kernel] = np.nan
    sm_weight[~is_kernel] = 0.0
    # Kineto writes 0 where it could not estimate occupancy (cuBLAS/nvjet kernels on Hopper,
    # about half of an H200 step's kernels): a running kernel never has 0%, so 0 means unknown.
    occ = ev.occupancy_pct[rows]
    occupancy = np.where(occ > 0, occ, np.nan)

    x, f = iv.step_function(start[is_compute], end[is_compute], sm_weight[is_compute])
    full_sm = iv.where(x, f >= sm_threshold)

    launch = launch_rows(ev, rows)
    steps = step_windows(rank, rows, launch, device_id, run)
    ctx = cpu_context(rank)
    cpu_op = ctx.innermost_op(launch)
    phase = ctx.innermost_annotation(launch)
    under_eager = ctx.under_op_named(launch, sb.EAGER_OP)
    kind = sb.classify(ev.names, ev.name[rows], np.where(cpu_op >= 0, ev.name[np.maximum(cpu_op, 0)], -1),
                       under_eager)
    return DeviceTimeline(rank, device_id, num_sms, rows, start, end, is_kernel, is_comm, is_compute,
                          is_memory, b, occupancy, sm_weight, sm_threshold, launch, steps, phase, cpu_op, kind,
                          full_sm)
