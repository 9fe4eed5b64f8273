"""The data model every analysis stands on: a columnar event table per rank.

One ``EventTable`` row per complete (``ph == "X"``) event that an analysis can use; events of
categories no analysis reads (``python_function``, ``overhead``, ``Trace`` spans, flows,
metadata) are dropped by the loader. Columns are numpy arrays of one length, typed as below.
Missing values: -1 for integer columns, NaN for float columns.

Times are float64 microseconds relative to ``RankTrace.origin_ts_us`` (the rank's first kept
event), so fractional timestamps near 5e12 keep their nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from speedtrace.profiling.runinfo import RunInfo


class Cat(IntEnum):
    """Event categories kept by the loader (``EventTable.cat``)."""

    KERNEL = 0
    GPU_MEMCPY = 1
    GPU_MEMSET = 2
    GPU_USER_ANNOTATION = 3
    CUDA_RUNTIME = 4
    CUDA_DRIVER = 5
    CPU_OP = 6
    USER_ANNOTATION = 7
    CUDA_SYNC = 8
    OTHER = 9  # any other 'X' category kept for completeness (e.g. 'cuda_event')


CAT_BY_NAME = {
    "kernel": Cat.KERNEL,
    "Kernel": Cat.KERNEL,
    "gpu_memcpy": Cat.GPU_MEMCPY,
    "gpu_memset": Cat.GPU_MEMSET,
    "gpu_user_annotation": Cat.GPU_USER_ANNOTATION,
    "cuda_runtime": Cat.CUDA_RUNTIME,
    "cuda_driver": Cat.CUDA_DRIVER,
    "cpu_op": Cat.CPU_OP,
    "user_annotation": Cat.USER_ANNOTATION,
    "cuda_sync": Cat.CUDA_SYNC,
}

# GPU activity in the sense of metrics.md: kernels, memcpy and memset.
GPU_ACTIVITY = (Cat.KERNEL, Cat.GPU_MEMCPY, Cat.GPU_MEMSET)
LAUNCH_CATS = (Cat.CUDA_RUNTIME, Cat.CUDA_DRIVER)

# Column name -> dtype. The loader fills exactly these.
COLUMNS: dict[str, type] = {
    "ts": np.float64,          # start, µs relative to origin_ts_us
    "dur": np.float64,         # µs, >= 0 (events without a numeric dur are excluded)
    "cat": np.uint8,           # Cat
    "name": np.int32,          # index into EventTable.names
    "pid": np.int64,           # process id; for GPU events the device id (>= 0). CPU events'
                               # string pids -> -2 (GPU events without an integer pid are excluded)
    "tid": np.int64,           # thread id; for GPU events the stream. String tids -> -2
    "stream": np.int64,        # args.stream (-1)
    "correlation": np.int64,   # args.correlation (-1)
    "external_id": np.int64,   # args["External id"] (-1)
    "device": np.int64,        # args.device (-1)
    "grid_blocks": np.int64,   # product of args.grid (-1 when unknown)
    "block_threads": np.int64,  # product of args.block (-1)
    "blocks_per_sm": np.float64,  # numeric args["blocks per SM"] (NaN when absent or not numeric)
    "occupancy_pct": np.float64,  # numeric args["est. achieved occupancy %"] (NaN)
    "registers": np.int64,     # args["registers per thread"] (-1)
    "shared_memory": np.int64,  # args["shared memory"] (-1)
    "extra": np.int32,         # index into RankTrace.event_args (-1): args no column holds
}


@dataclass
class EventTable:
    """Columns of equal length; see ``COLUMNS`` for meanings and dtypes."""

    ts: np.ndarray
    dur: np.ndarray
    cat: np.ndarray
    name: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    stream: np.ndarray
    correlation: np.ndarray
    external_id: np.ndarray
    device: np.ndarray
    grid_blocks: np.ndarray
    block_threads: np.ndarray
    blocks_per_sm: np.ndarray
    occupancy_pct: np.ndarray
    registers: np.ndarray
    shared_memory: np.ndarray
    extra: np.ndarray
    names: list[str] = field(default_factory=list)  # string table for the name column

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> "EventTable":
        return cls(**{k: np.empty(0, dtype=t) for k, t in COLUMNS.items()}, names=[])

    def take(self, index: np.ndarray) -> "EventTable":
        """Rows selected by a boolean mask or an index array (the string table is shared)."""
        return EventTable(**{k: getattr(self, k)[index] for k in COLUMNS}, names=self.names)

    def name_of(self, i: int) -> str:
        return self.names[self.name[i]]

    def to_pandas(self):
        """A DataFrame view (pandas imported on demand), names decoded, categories as text."""
        import pandas as pd

        data = {k: getattr(self, k) for k in COLUMNS}
        data["cat"] = pd.Categorical.from_codes(self.cat, [c.name.lower() for c in Cat])
        data["name"] = np.asarray(self.names, dtype=object)[self.name] if len(self.names) else []
        return pd.DataFrame(data)


@dataclass
class DeviceInfo:
    """One entry of the trace's ``deviceProperties`` (fields absent in the trace are None)."""

    id: int
    name: str | None = None
    num_sms: int | None = None
    max_threads_per_sm: int | None = None


@dataclass
class RankTrace:
    """One trace file: its metadata and its events."""

    path: str
    rank: int
    events: EventTable
    origin_ts_us: float                # absolute ts of the first kept event
    world_size: int | None = None
    devices: dict[int, DeviceInfo] = field(default_factory=dict)  # from deviceProperties
    distributed_info: dict | None = None
    # Profiler options that dilate timings, read from the trace's top-level metadata.
    record_shapes: bool = False
    with_stack: bool = False
    profile_memory: bool = False
    metadata: dict = field(default_factory=dict)  # other small top-level keys, as written
    # The args that only some events carry, as small dicts that ``EventTable.extra`` points to:
    # a kernel's launch dimensions ("grid", "block": tuples, shared by kernels of one
    # configuration), a collective's parameters from ``record_param_comms`` (or from the kernel
    # itself in older traces: "collective", "dtype", "in_nelems", "out_nelems", "group_size",
    # "pg_name", "pg_desc", "pg_ranks") and Kineto's CUDA-event wait links ("wait_on_stream",
    # "wait_on_record_corr"). Kept beside the table, so filtering rows keeps the indices valid.
    event_args: list[dict] = field(default_factory=list)
    # What the loader found odd in this file and how it dealt with it (events it excluded...);
    # ``load`` adds them to TraceSet.warnings.
    warnings: list[str] = field(default_factory=list)

    def args_of(self, row: int) -> dict:
        """The extra args of an event row (empty when it has none)."""
        if row < 0:
            return {}
        k = int(self.events.extra[row])
        return self.event_args[k] if k >= 0 else {}

    def gpu_devices(self) -> list[int]:
        """Device ids with GPU activity, ascending."""
        ev = self.events
        mask = np.isin(ev.cat, GPU_ACTIVITY)
        return sorted(int(d) for d in np.unique(ev.pid[mask]))


@dataclass
class TraceSet:
    """What ``speedtrace.analysis.load`` returns: the ranks of one run, ordered by rank."""

    path: str
    ranks: list[RankTrace]
    run: RunInfo | None = None         # run.json beside the traces, when present
    warnings: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int | None:
        sizes = [r.world_size for r in self.ranks if r.world_size]
        return max(sizes) if sizes else None


class Records(list):
    """A list of plain dict records, with a DataFrame view built on demand."""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self))
