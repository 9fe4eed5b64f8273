"""Build small synthetic Kineto traces for tests.

Times are given in µs relative to ``base_us`` (default 5e12, where real traces live) and kept
as integer nanoseconds, so a written timestamp is the exact decimal a profiler would write.

    t = Trace(rank=0)
    t.step(11, 0, 100)                                   # CPU ProfilerStep#11 annotation
    t.annotation("forward", 1, 50)
    t.launch_kernel("gemm", launch_at=2, start=5, dur=10, grid=132)
    t.write(tmp_path / "rank-0.trace.json.gz")
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

PID = 4242          # the trainer process
MAIN_TID = 4242     # its main thread
AUTOGRAD_TID = 4300  # the autograd engine's thread


class Trace:
    """Accumulates trace events; each adder returns the event's correlation id where it has one."""

    def __init__(self, rank: int | None = 0, world_size: int = 1, devices: dict | None = None,
                 base_us: float = 5e12, metadata: dict | None = None, device_properties: bool = True):
        self.rank = rank
        self.world_size = world_size
        # device id -> numSms (None: the entry lacks numSms)
        self.devices = {0: 132} if devices is None else devices
        self.base_ns = round(base_us * 1000)
        self.metadata = metadata or {}
        self.device_properties = device_properties
        self.events: list[dict] = []
        self._corr = 1000

    # ------------------------------------------------------------------ helpers
    def _ts(self, t_us: float) -> float:
        return (self.base_ns + round(t_us * 1000)) / 1000

    def _x(self, cat, name, ts, dur, pid, tid, args=None):
        e = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": self._ts(ts),
             "dur": round(dur * 1000) / 1000}
        if args is not None:
            e["args"] = args
        self.events.append(e)
        return e

    def next_correlation(self) -> int:
        self._corr += 1
        return self._corr

    # ------------------------------------------------------------------ CPU side
    def cpu_op(self, name, ts, dur, tid=MAIN_TID, pid=PID):
        self._x("cpu_op", name, ts, dur, pid, tid, {"External id": 1})

    def annotation(self, name, ts, dur, tid=MAIN_TID, pid=PID):
        """A record_function range (``user_annotation``)."""
        self._x("user_annotation", name, ts, dur, pid, tid, {"External id": 1})

    def step(self, n, ts, dur, tid=MAIN_TID, pid=PID):
        self.annotation(f"ProfilerStep#{n}", ts, dur, tid, pid)

    def runtime(self, name, ts, dur, tid=MAIN_TID, pid=PID, correlation=None, driver=False):
        """A CUDA runtime (or driver) call; a launch when it has a correlation."""
        args = {} if correlation is None else {"correlation": correlation}
        self._x("cuda_driver" if driver else "cuda_runtime", name, ts, dur, pid, tid, args)

    # ------------------------------------------------------------------ GPU side
    def kernel(self, name, start, dur, *, stream=7, device=0, correlation=-1, grid=None,
               block=(128, 1, 1), blocks_per_sm=None, occupancy=None, args=True):
        """A kernel; ``grid`` an int (1-D) or a 3-tuple; ``args=False`` writes no args at all."""
        a = None
        if args:
            a = {"device": device, "stream": stream, "correlation": correlation}
            if grid is not None:
                a["grid"] = [grid, 1, 1] if isinstance(grid, int) else list(grid)
                a["block"] = list(block)
            if blocks_per_sm is not None:
                a["blocks per SM"] = blocks_per_sm
            if occupancy is not None:
                a["est. achieved occupancy %"] = occupancy
        self._x("kernel", name, start, dur, device, stream, a)

    def launch_kernel(self, name, launch_at, start, dur, *, launch_dur=1.0, tid=MAIN_TID,
                      driver=False, **kernel_args) -> int:
        """A ``cudaLaunchKernel`` call at ``launch_at`` and the kernel it launches."""
        c = self.next_correlation()
        self.runtime("cuLaunchKernel" if driver else "cudaLaunchKernel", launch_at, launch_dur,
                     tid=tid, correlation=c, driver=driver)
        self.kernel(name, start, dur, correlation=c, **kernel_args)
        return c

    def memcpy(self, start, dur, *, stream=7, device=0, launch_at=None, tid=MAIN_TID,
               name="Memcpy HtoD (Pageable -> Device)"):
        c = self.next_correlation()
        if launch_at is not None:
            self.runtime("cudaMemcpyAsync", launch_at, 1.0, tid=tid, correlation=c)
        self._x("gpu_memcpy", name, start, dur, device, stream,
                {"device": device, "stream": stream, "correlation": c})

    def memset(self, start, dur, *, stream=7, device=0, launch_at=None, tid=MAIN_TID):
        c = self.next_correlation()
        if launch_at is not None:
            self.runtime("cudaMemsetAsync", launch_at, 1.0, tid=tid, correlation=c)
        self._x("gpu_memset", "Memset (Device)", start, dur, device, stream,
                {"device": device, "stream": stream, "correlation": c})

    def cuda_sync(self, start, dur, *, stream=7, device=0):
        self._x("cuda_sync", "Stream Sync", start, dur, device, stream, {"device": device, "stream": stream})

    def gpu_annotation(self, name, start, dur, *, stream=7, device=0):
        self._x("gpu_user_annotation", name, start, dur, device, stream, {"device": device})

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        d = {"schemaVersion": 1, "traceEvents": list(self.events), **self.metadata}
        if self.device_properties:
            d["deviceProperties"] = [
                {"id": i, "name": "NVIDIA H200", **({"numSms": n} if n is not None else {})}
                for i, n in sorted(self.devices.items())]
        if self.rank is not None:
            d["distributedInfo"] = {"backend": "nccl", "rank": self.rank, "world_size": self.world_size}
        return d

    def write(self, path) -> Path:
        """Write ``.json`` or ``.json.gz`` (by the suffix); returns the path."""
        path = Path(path)
        text = json.dumps(self.to_dict())
        if path.name.endswith(".gz"):
            with gzip.open(path, "wt") as f:
                f.write(text)
        else:
            path.write_text(text)
        return path
