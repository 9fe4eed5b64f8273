"""Profile any training step function with torch.profiler and write a trace set.

The protocol (issue "speedtrace profile"): ``startup_steps`` calls run under a profiler session
that is thrown away (the profiler's start-up), ``unprofiled`` steps are timed without the
profiler, then ``wait + warmup + active`` steps run under a torch.profiler schedule. Every step
is timed between device synchronisations. The dilation is the median profiled active step time
over the median unprofiled step time, leaving out the last active step, whose end writes the
trace. Output: ``rank-N.trace.json.gz`` per rank and, from rank 0, ``run.json``, with the mode's
dilation target and whether the host set the length of the unprofiled and the profiled steps
(``profiling.verdict``); rank 0 warns when the dilation is above the target.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from speedtrace.errors import warn
from speedtrace.profiling import runinfo
from speedtrace.profiling.markers import MARKER_KERNEL, launch_marker
from speedtrace.profiling.runmeta import cpu_steal_ms, environment
from speedtrace.profiling.verdict import DILATION_TARGETS, dilation_note, host_bound

# "timing" keeps dilation lowest; "full" keeps every CPU op and annotation (no shapes/stacks).
MODES = ("timing", "full")
# Timing mode's activities, keyed by whether the step replays CUDA graphs. A step that launches
# its kernels one by one keeps its host busy for most of the step, so CPU events (a callback per
# op and launch) push it onto the critical path: it is traced CUDA-only, with marker kernels for
# its steps. A graphed step's host finishes long before its GPU, so it can afford CPU+CUDA, which
# keeps the phases, the optimizer's ranges and the gap causes. The measurements behind the choice
# are in benchmarks/RESULTS.md ("Evidence for the profiler's defaults").
TIMING_ACTIVITIES = {False: "cuda", True: "cpu+cuda"}   # keyed by "the step replays CUDA graphs"
ACTIVITY_CHOICES = ("cuda", "cpu+cuda", "cpu")


@dataclass
class ProfileSettings:
    out_dir: Path
    first_step: int = 0
    unprofiled: int = 10
    wait: int = 1
    warmup: int = 2
    active: int = 6
    mode: str = "timing"
    activities: str | None = None       # None: chosen from mode and device
    record_shapes: bool = False
    with_stack: bool = False
    profile_memory: bool = False
    # Inductor wraps every kernel launch in its own profiler range (kernel file, grid, ...) while a
    # profiler is on, through a slow launch path: thousands a step, the largest part of the host
    # time the profiler adds to a compiled step. Off, launches still show as runtime/driver calls
    # linked to their kernels, inside the same annotations.
    launch_records: bool = False
    # Calls of step_fn(first_step) under a profiler session that is thrown away, before the
    # unprofiled steps. A process's first profiler session runs slower throughout, beyond the
    # schedule's warm-up steps (benchmarks/RESULTS.md), so its start-up is paid here.
    startup_steps: int = 1
    # The step replays CUDA graphs (the bundled trainer's --cuda-graphs): its host work is small,
    # so timing mode can afford CPU events. Recorded in run.json.
    cuda_graphs: bool = False
    metadata: dict = field(default_factory=dict)  # merged into run.json (config, variant, ...)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.activities is not None and self.activities not in ACTIVITY_CHOICES:
            raise ValueError(f"activities must be one of {ACTIVITY_CHOICES}")
        if (self.unprofiled < 1 or self.active < 2 or self.wait < 0 or self.warmup < 0
                or self.startup_steps < 0):
            raise ValueError("need unprofiled >= 1, active >= 2, wait >= 0, warmup >= 0, startup_steps >= 0")


def choose_activities(mode: str, on_cuda: bool, requested: str | None, cuda_graphs: bool = False) -> str:
    if not on_cuda:
        return "cpu"
    if requested:
        return requested
    return TIMING_ACTIVITIES[cuda_graphs] if mode == "timing" else "cpu+cuda"


def _hide_profiler_from_inductor() -> None:
    """Make Inductor launch through its fast path: it checks this flag, which the profiler sets
    whenever it starts collecting (entering, and at the schedule's warm-up and record steps)."""
    import torch.autograd.profiler as autograd_profiler

    if hasattr(autograd_profiler, "_is_profiler_enabled"):
        autograd_profiler._is_profiler_enabled = False


def _since(steal_before: float | None) -> float | None:
    now = cpu_steal_ms()
    return round(now - steal_before, 1) if now is not None and steal_before is not None else None


def _median_ms(times: list[float]) -> float | None:
    return statistics.median(times) if times else None


def profile(step_fn: Callable[[int], object], settings: ProfileSettings, *, rank: int = 0,
            world_size: int = 1, device: str | None = None, log=print) -> dict:
    """Run and profile ``step_fn(step)``; returns the run.json dict (written by rank 0).

    ``step_fn`` must run one whole training step for the step number it is given. It is first
    called ``startup_steps`` times with ``first_step`` under a discarded profiler session; then steps
    ``first_step .. first_step + unprofiled - 1`` are timed unprofiled, the following
    ``wait + warmup + active`` steps run under the profiler; keep them in one stage of the
    schedule so that the two medians compare like with like.
    """
    import torch

    settings.validate()
    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    activities = choose_activities(settings.mode, on_cuda, settings.activities, settings.cuda_graphs)
    use_markers = activities == "cuda"
    marker_buf = torch.zeros(1, dtype=torch.int32, device="cuda") if use_markers else None
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    prof_acts = []
    if "cpu" in activities:
        prof_acts.append(torch.profiler.ProfilerActivity.CPU)
    if "cuda" in activities:
        prof_acts.append(torch.profiler.ProfilerActivity.CUDA)
    # The start-up session and the measured one record the same things.
    recording = dict(activities=prof_acts, record_shapes=settings.record_shapes,
                     with_stack=settings.with_stack, profile_memory=settings.profile_memory)
    quiet = (lambda: None) if settings.launch_records else _hide_profiler_from_inductor

    step = settings.first_step
    if settings.startup_steps:
        with torch.profiler.profile(**recording):
            quiet()
            for _ in range(settings.startup_steps):
                if use_markers:
                    launch_marker(marker_buf)
                step_fn(step)
            sync()
    unprofiled_ms, unprofiled_host_ms = [], []
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    steal_before = cpu_steal_ms()
    for _ in range(settings.unprofiled):
        sync()
        t0 = time.perf_counter()
        step_fn(step)
        unprofiled_host_ms.append((time.perf_counter() - t0) * 1e3)
        sync()
        unprofiled_ms.append((time.perf_counter() - t0) * 1e3)
        step += 1
    steal = {"unprofiled": _since(steal_before)}
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    # CUDA-graph pools count as allocated only while a capture runs: reserved covers replays too.
    reserved_mib = torch.cuda.max_memory_reserved() / 2**20 if on_cuda else None
    log(f"unprofiled: {len(unprofiled_ms)} steps, median {_median_ms(unprofiled_ms):.2f} ms"
        + (f", peak allocated {peak_mib:.0f} MiB" if peak_mib is not None else ""))

    trace_path = out / f"rank-{rank}.trace.json.gz"

    def write_trace(p):
        p.export_chrome_trace(str(trace_path))

    # ProfilerStep#N should carry the training step number, and the schedule counts from the
    # profiler's step_num: start both at the current step and skip the steps before it.
    schedule = torch.profiler.schedule(wait=settings.wait, warmup=settings.warmup,
                                       active=settings.active, repeat=1, skip_first=step)
    prof = torch.profiler.profile(schedule=schedule, on_trace_ready=write_trace, **recording)
    prof.step_num = step
    first_active = step + settings.wait + settings.warmup
    last_active = first_active + settings.active - 1
    profiled_ms, profiled_host_ms, active_steps = [], [], []
    with prof:
        quiet()
        while step <= last_active:
            active = step >= first_active
            if step == first_active:
                # Metadata can only be added while the profiler is collecting.
                prof.add_metadata("speedtrace_mode", settings.mode)
                prof.add_metadata("speedtrace_activities", activities)
                steal_before = cpu_steal_ms()
            elif step == last_active:
                steal["profiled"] = _since(steal_before)   # the steps in the dilation's median
            sync()
            t0 = time.perf_counter()
            if active and use_markers:
                launch_marker(marker_buf)
            step_fn(step)
            host_ms = (time.perf_counter() - t0) * 1e3
            if step == last_active:
                if use_markers:
                    launch_marker(marker_buf)  # closes the last step's window
                sync()
                # This step's prof.step() collects and writes the trace: left out of the median.
                prof.step()
            else:
                prof.step()
                quiet()
                sync()
                if active:
                    profiled_ms.append((time.perf_counter() - t0) * 1e3)
                    profiled_host_ms.append(host_ms)
            if active:
                active_steps.append(step)
            step += 1

    med_u, med_p = _median_ms(unprofiled_ms), _median_ms(profiled_ms)
    dilation = (med_p / med_u) if (med_u and med_p) else None
    log(f"profiled: {len(profiled_ms)} steps, median {med_p:.2f} ms, dilation {dilation:.3f}")
    # The user's metadata: fields run.json knows (the trainer's config, variant, ...) stay at the
    # top level, where older runs have them; anything else goes under "metadata".
    given = dict(settings.metadata)
    extra = {k: given.pop(k) for k in list(given) if k not in runinfo.FIELDS or k == "metadata"}
    fields = {
        "schema": runinfo.SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **given,
        "mode": settings.mode,
        "activities": activities,
        "record_shapes": settings.record_shapes,
        "with_stack": settings.with_stack,
        "profile_memory": settings.profile_memory,
        "launch_records": settings.launch_records,
        "startup_steps": settings.startup_steps,
        "cuda_graphs": settings.cuda_graphs,
        "world_size": world_size,
        "unprofiled_steps": list(range(settings.first_step, settings.first_step + settings.unprofiled)),
        "unprofiled_step_ms": [round(t, 4) for t in unprofiled_ms],
        "profiled_steps": active_steps,
        "profiled_step_ms": [round(t, 4) for t in profiled_ms],
        # When step_fn returned (before the closing synchronisation): near the step time, the
        # host is the critical path, and what a profiler adds on the host shows as dilation.
        "unprofiled_host_ms": [round(t, 4) for t in unprofiled_host_ms],
        "profiled_host_ms": [round(t, 4) for t in profiled_host_ms],
        "dilation": round(dilation, 4) if dilation else None,
        # Only an asynchronous device can run behind the host; on a CPU the host is the device, and
        # neither the targets nor a host verdict apply.
        "dilation_target": DILATION_TARGETS.get(settings.mode) if on_cuda else None,
        "host_bound": {"unprofiled": host_bound(unprofiled_host_ms, unprofiled_ms) if on_cuda else None,
                       "profiled": host_bound(profiled_host_ms, profiled_ms) if on_cuda else None},
        # The hypervisor's share of this machine's CPUs while the timed steps ran: where it is not
        # zero, the host was slower than its own code made it.
        "steal_ms": steal,
        "unprofiled_peak_allocated_mib": round(peak_mib, 1) if peak_mib is not None else None,
        "unprofiled_peak_reserved_mib": round(reserved_mib, 1) if reserved_mib is not None else None,
        "environment": environment(),
        "step_markers": {"kernel": MARKER_KERNEL, "steps": active_steps} if use_markers else None,
        "metadata": extra or None,
    }
    info, problems = runinfo.from_dict(fields, "ProfileSettings.metadata")
    for problem in problems:
        warn(problem)
    # Measurements that came out empty are written as null; optional parts are left out.
    run = runinfo.to_dict(info, keep=tuple(k for k, v in fields.items()
                                           if v is not None or k not in ("step_markers", "metadata")))
    if rank == 0:
        (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        note = dilation_note(run)
        if note:
            warn(note)
    return run
