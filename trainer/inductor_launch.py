"""A cached launch path for Inductor's Triton kernels on torch versions that lack one.

Every launch from a compiled graph goes through ``CachingAutotuner.run``. Up to torch 2.11 that
method redoes its set-up on every call (a debug-mode lookup, a new Triton allocator closure,
launcher and coordinate-descent checks, a copy of the arguments) before it calls the one
compiled launcher. That set-up is a sizeable share of each launch's host time, and the speedrun
step makes thousands of launches while its host is already close to being the critical path
(benchmarks/RESULTS.md has the figures). Later torch versions keep the launcher after the first launch
and call it directly; ``install`` gives older versions the same behaviour and does nothing where
torch has it already.

The direct call is taken only when the full path would do nothing but launch: one launcher, no
cubin to save, no dumps, no tuning left, no keyword arguments, no benchmark run, no debug mode,
no profiler that wants Inductor's per-launch records, and a Triton allocator already set on this
thread by an earlier full launch (kernels with device-made TMA descriptors need one).
"""

from __future__ import annotations

import functools
import threading

from torch.autograd import profiler as autograd_profiler

_thread = threading.local()
_enabled = True


def set_enabled(on: bool) -> None:
    """Switch the direct call on or off (for timing the difference); ``install`` is unaffected."""
    global _enabled
    _enabled = bool(on)


def _has_own_cache(run) -> bool:
    return "_cached_launcher" in run.__code__.co_names


def _direct_launcher(autotuner):
    """The launcher to call directly from now on, or None while the full path still has work."""
    launchers = getattr(autotuner, "launchers", None)
    if not launchers or len(launchers) != 1 or getattr(autotuner, "triton_interpret", False):
        return None
    if getattr(autotuner, "dump_launch_params", False) or getattr(autotuner, "dump_launch_tensors", False):
        return None
    launcher = launchers[0]
    if getattr(launcher, "store_cubin", False):
        return None
    config = getattr(launcher, "config", None)
    tuning = getattr(autotuner, "inductor_meta", {}).get("coordinate_descent_tuning", False)
    if tuning and not getattr(config, "found_by_coordesc", False):
        return None
    return launcher


def install(cls=None) -> bool:
    """Give ``cls.run`` (default: Inductor's ``CachingAutotuner``) a direct-call path.

    Returns True when installed now or before, False where torch caches launchers itself.
    """
    if cls is None:
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner as cls
    full_run = cls.run
    if getattr(full_run, "_speedtrace_direct", False):
        return True
    if _has_own_cache(full_run):
        return False
    debug_mode = full_run.__globals__.get("get_active_debug_mode", lambda: None)

    @functools.wraps(full_run)
    def run(self, *args, stream, benchmark_run=False, **kwargs):
        launcher = self.__dict__.get("_speedtrace_launcher")
        if (launcher is not None and _enabled and not benchmark_run and not kwargs
                and not autograd_profiler._is_profiler_enabled
                and getattr(_thread, "allocator_set", False) and not debug_mode()):
            return launcher(*args, stream=stream)
        result = full_run(self, *args, stream=stream, benchmark_run=benchmark_run, **kwargs)
        # The full path has set Triton's allocator (a context variable) on this thread.
        _thread.allocator_set = True
        if launcher is None and not kwargs and not benchmark_run:
            self._speedtrace_launcher = _direct_launcher(self)
        return result

    run._speedtrace_direct = True
    cls.run = run
    return True
