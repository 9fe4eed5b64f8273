"""How a profiled run's step and host times read: each mode's dilation target, and whether the
host rather than the GPU set the length of the steps.

A step function returns once the host has queued its last kernel; the closing synchronisation then
waits for the GPU to finish. When the host returns only just before the step ends, the host is the
critical path: anything that slows the host (the profiler's callbacks on every op and launch, or a
host that is slower at the time) lengthens the step one for one.
"""

from __future__ import annotations

import statistics

# Dilation targets of the speedrun config on the H200 (issue "speedtrace profile").
DILATION_TARGETS = {"timing": 1.03, "full": 1.05}
# Host time at or above this share of the step time: the host was the critical path.
HOST_BOUND_FRACTION = 0.95


def host_bound(host_ms: list[float], step_ms: list[float]) -> bool | None:
    """Whether the median host time reaches HOST_BOUND_FRACTION of the median step time; None
    without both lists."""
    if not host_ms or not step_ms:
        return None
    return statistics.median(host_ms) >= HOST_BOUND_FRACTION * statistics.median(step_ms)


def host_times(run: dict, kind: str) -> str:
    """'the step function returned H ms into each S ms <kind> step' from run.json's medians; kind
    is "unprofiled" or "profiled"."""
    host, step = run.get(f"{kind}_host_ms"), run.get(f"{kind}_step_ms")
    if not host or not step:
        return f"run.json has no {kind} host and step times"
    return (f"the step function returned {statistics.median(host):.1f} ms into each "
            f"{statistics.median(step):.1f} ms {kind} step")


def steal_text(run: dict) -> str:
    """'steal time ...: U ms during the unprofiled steps, P ms during the profiled ones' from
    run.json's ``steal_ms`` when either is above zero, else ''."""
    steal = run.get("steal_ms") if isinstance(run.get("steal_ms"), dict) else {}
    u, p = steal.get("unprofiled"), steal.get("profiled")
    if not any(isinstance(v, (int, float)) and v > 0 for v in (u, p)):
        return ""
    ms = ["?" if not isinstance(v, (int, float)) else f"{v:.0f}" for v in (u, p)]
    return (f"steal time (CPU the hypervisor took from this machine): {ms[0]} ms during the unprofiled "
            f"steps, {ms[1]} ms during the profiled ones")


def dilation_note(run: dict) -> str | None:
    """One line for a run.json whose dilation is above its mode's target, saying what set the pace
    of its steps; None when it is within the target or cannot be judged (no dilation, no target,
    or no host times, as on a CPU, where the host is the device)."""
    dilation, target = run.get("dilation"), DILATION_TARGETS.get(run.get("mode"))
    bound = run.get("host_bound") or {}
    if dilation is None or target is None or dilation <= target or bound.get("profiled") is None:
        return None

    head = f"dilation {dilation:.3f} is above {run['mode']} mode's target {target}"
    stolen = steal_text(run)
    if stolen:
        head += f" ({stolen})"
    if bound.get("unprofiled"):
        return (f"{head}: even the unprofiled steps were host-bound ({host_times(run, 'unprofiled')}); the host was "
                "slower than the GPU at the time, so both medians measure the host: run again when it is quiet")
    if bound["profiled"]:
        cure = ("" if run.get("cuda_graphs") else
                "; a step replayed as CUDA graphs keeps its host off the critical path (for the bundled "
                "trainer, timing mode does that)")
        return (f"{head}: the profiled steps were host-bound ({host_times(run, 'profiled')}; "
                f"{host_times(run, 'unprofiled')}), so the profiler's host work, or a host slower than before, "
                f"lengthened them one for one{cure}")
    return (f"{head}; the host was not the critical path at the steps' ends ({host_times(run, 'profiled')}): "
            "`speedtrace report` lists the gaps where the profiled steps lost time")
