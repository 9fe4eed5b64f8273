"""The direct launch path that the trainer gives Inductor's autotuner on older torch versions.

Exercised on a stand-in class with the same ``run`` signature: the real ``CachingAutotuner`` of
the torch installed here already keeps its launcher (``install`` leaves it alone, checked last).
"""

import threading

import pytest
import torch.autograd.profiler as autograd_profiler

from speedtrace.trainer import inductor_launch


class Launcher:
    def __init__(self, store_cubin=False):
        self.store_cubin = store_cubin
        self.config = None
        self.calls = []

    def __call__(self, *args, stream):
        self.calls.append((args, stream))
        return "launched"


def make_autotuner_class():
    class Autotuner:
        def __init__(self, launcher, **meta):
            self.launcher = launcher
            self.launchers = []
            self.inductor_meta = meta
            self.triton_interpret = False
            self.full_runs = 0

        def run(self, *args, stream, benchmark_run=False, **kwargs):
            self.full_runs += 1
            self.launchers = [self.launcher]   # compiled on first use, as Inductor does
            return self.launcher(*args, stream=stream)

    return Autotuner


@pytest.fixture
def autotuner_class():
    cls = make_autotuner_class()
    assert inductor_launch.install(cls) is True
    yield cls
    inductor_launch.set_enabled(True)


def test_second_launch_calls_the_launcher_directly(autotuner_class):
    launcher = Launcher()
    k = autotuner_class(launcher)
    assert k.run(1, 2, stream=7) == "launched"
    assert k.run(3, 4, stream=8) == "launched"
    assert k.full_runs == 1
    assert launcher.calls == [((1, 2), 7), ((3, 4), 8)]


def test_install_is_idempotent(autotuner_class):
    wrapped = autotuner_class.run
    assert inductor_launch.install(autotuner_class) is True
    assert autotuner_class.run is wrapped


@pytest.mark.parametrize("case", ["profiler", "kwargs", "benchmark", "cubin", "tuning", "switched off"])
def test_full_path_whenever_it_has_more_to_do(autotuner_class, monkeypatch, case):
    launcher = Launcher(store_cubin=case == "cubin")
    k = autotuner_class(launcher, coordinate_descent_tuning=case == "tuning")
    extra = {}
    if case == "kwargs":
        extra = {"extra": 1}
    if case == "benchmark":
        extra = {"benchmark_run": True}
    k.run(1, stream=0, **extra)
    if case == "profiler":
        # A profiler that wants Inductor's per-launch records (speedtrace profile --launch-records).
        monkeypatch.setattr(autograd_profiler, "_is_profiler_enabled", True)
    if case == "switched off":
        inductor_launch.set_enabled(False)
    k.run(1, stream=0, **extra)
    assert k.full_runs == 2


def test_each_thread_starts_on_the_full_path(autotuner_class):
    # The full path sets Triton's allocator, a per-thread context variable (autograd runs the
    # backward on its own thread); a thread's first launch must go through it.
    k = autotuner_class(Launcher())
    k.run(stream=0)
    done = []
    t = threading.Thread(target=lambda: done.append(k.run(stream=0)))
    t.start()
    t.join()
    assert done == ["launched"] and k.full_runs == 2
    k.run(stream=0)
    assert k.full_runs == 2


def test_versions_with_their_own_cache_are_left_alone():
    class Cached:
        def run(self, *args, stream, benchmark_run=False, **kwargs):
            return self._cached_launcher

    original = Cached.run
    assert inductor_launch.install(Cached) is False
    assert Cached.run is original


def test_installed_torch_is_patched_only_where_needed():
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    own_cache = "_cached_launcher" in CachingAutotuner.run.__code__.co_names
    assert inductor_launch.install() is (not own_cache)
