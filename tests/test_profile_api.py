"""`speedtrace.profiling.profile` on a user's own step function, and how modes pick activities."""

import gzip
import json

import pytest
import torch

import speedtrace.profiling as prof
from speedtrace.profiling.capture import choose_activities


def test_modes_choose_activities():
    # Timing mode takes the configuration measured least dilating on the H200 (CUDA only).
    assert choose_activities("timing", True, None) == "cuda"
    assert choose_activities("timing", True, None, cuda_graphs=True) == "cpu+cuda"
    assert choose_activities("full", True, None, cuda_graphs=True) == "cpu+cuda"
    assert choose_activities("timing", False, None, cuda_graphs=True) == "cpu"
    assert choose_activities("full", True, None) == "cpu+cuda"
    assert choose_activities("timing", True, "cpu+cuda") == "cpu+cuda"
    assert choose_activities("full", False, None) == "cpu"


@pytest.mark.parametrize("bad", [dict(mode="fast"), dict(active=1), dict(unprofiled=0), dict(activities="gpu"),
                                 dict(startup_steps=-1)])
def test_bad_settings_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        prof.profile(lambda step: None, prof.ProfileSettings(out_dir=tmp_path, **bad))


def test_user_step_function(tmp_path):
    w = torch.randn(64, 64, requires_grad=True)
    seen = []

    def step(n):
        seen.append((n, torch._C._autograd._profiler_enabled()))
        with torch.profiler.record_function("my_forward"):
            loss = (torch.randn(8, 64) @ w).square().sum()
        loss.backward()
        w.grad = None

    settings = prof.ProfileSettings(out_dir=tmp_path, first_step=100, unprofiled=3, wait=1, warmup=1,
                                    active=3, metadata={"model": "toy"})
    run = prof.profile(step, settings, log=lambda *a: None)
    # One start-up call under a profiler that is thrown away, 3 unprofiled, then wait 1 + warmup 1
    # + active 3 under the profiler, numbered from first_step.
    assert [n for n, _ in seen] == [100] + list(range(100, 108))
    # (the wait and warm-up steps of the schedule do not collect)
    assert [on for _, on in seen] == [True] + [False] * 3 + [False] * 2 + [True] * 3
    assert run["startup_steps"] == 1
    assert run["profiled_steps"] == [105, 106, 107] and len(run["profiled_step_ms"]) == 2
    # Metadata outside run.json's schema is kept under "metadata" (profiling/runinfo.py).
    assert run["metadata"] == {"model": "toy"} and run["activities"] == "cpu"
    assert json.loads((tmp_path / "run.json").read_text()) == run
    with gzip.open(tmp_path / "rank-0.trace.json.gz") as f:
        names = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
    assert {"ProfilerStep#105", "ProfilerStep#106", "ProfilerStep#107", "my_forward"} <= names


def test_startup_session_can_be_left_out(tmp_path):
    seen = []
    settings = prof.ProfileSettings(out_dir=tmp_path, first_step=5, unprofiled=2, wait=0, warmup=0, active=2,
                                    startup_steps=0)
    run = prof.profile(lambda n: seen.append(n), settings, log=lambda *a: None)
    assert seen == [5, 6, 7, 8] and run["startup_steps"] == 0


@pytest.mark.parametrize("launch_records", [False, True])
def test_inductor_launch_records_are_opt_in(tmp_path, launch_records):
    # Inductor checks this flag on every launch; while it is set, each launch goes through a slow
    # path that adds its own profiler range (the largest host cost of profiling a compiled step).
    import torch.autograd.profiler as autograd_profiler

    flags = {}

    def step(n):
        flags[n] = autograd_profiler._is_profiler_enabled
        with torch.profiler.record_function("work"):
            torch.randn(16, 16).sum()

    settings = prof.ProfileSettings(out_dir=tmp_path, first_step=0, unprofiled=2, wait=0, warmup=1, active=3,
                                    launch_records=launch_records)
    run = prof.profile(step, settings, log=lambda *a: None)
    assert [flags[s] for s in run["profiled_steps"]] == [launch_records] * 3
    assert run["launch_records"] is launch_records
    # Either way the profiler records the step's CPU ranges.
    with gzip.open(tmp_path / "rank-0.trace.json.gz") as f:
        names = [e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"]
    assert names.count("work") == 3
    assert not autograd_profiler._is_profiler_enabled


def test_host_times_are_recorded_beside_step_times(tmp_path):
    import time

    def step(n):
        time.sleep(0.002)

    settings = prof.ProfileSettings(out_dir=tmp_path, unprofiled=3, wait=0, warmup=1, active=3)
    run = prof.profile(step, settings, log=lambda *a: None)
    assert len(run["unprofiled_host_ms"]) == 3 and len(run["profiled_host_ms"]) == 2
    for host, total in zip(run["unprofiled_host_ms"] + run["profiled_host_ms"],
                           run["unprofiled_step_ms"] + run["profiled_step_ms"]):
        assert 2.0 <= host <= total


def test_no_target_and_no_host_verdict_on_a_cpu(tmp_path):
    settings = prof.ProfileSettings(out_dir=tmp_path, unprofiled=2, wait=0, warmup=0, active=2, mode="full")
    run = prof.profile(lambda n: None, settings, log=lambda *a: None)
    # The host is the device on a CPU: "host-bound" would always hold and say nothing, and the
    # targets are those of a GPU step.
    assert run["dilation_target"] is None
    assert run["host_bound"] == {"unprofiled": None, "profiled": None}
    # Steal time is the machine's, measured on a CPU too (Linux: /proc/stat).
    assert set(run["steal_ms"]) == {"unprofiled", "profiled"}
    assert all(v is None or v >= 0 for v in run["steal_ms"].values())


def test_steal_time_covers_exactly_the_timed_steps(tmp_path, monkeypatch):
    import speedtrace.profiling.capture as capture

    stolen = [0.0]

    def step(n):
        stolen[0] += 5.0   # the hypervisor takes 5 ms during every call

    monkeypatch.setattr(capture, "cpu_steal_ms", lambda: stolen[0])
    settings = prof.ProfileSettings(out_dir=tmp_path, unprofiled=3, wait=0, warmup=1, active=3)
    run = prof.profile(step, settings, log=lambda *a: None)
    # Not the start-up call, nor the schedule's warm-up step, nor the trace-writing last step:
    # 3 unprofiled steps and the 2 profiled steps of the median.
    assert run["steal_ms"] == {"unprofiled": 15.0, "profiled": 10.0}


def test_a_dilation_note_is_printed_as_a_warning(tmp_path, monkeypatch, capsys):
    import speedtrace.profiling.capture as capture

    seen = []
    monkeypatch.setattr(capture, "dilation_note", lambda run: seen.append(run) or "the host was slow")
    settings = prof.ProfileSettings(out_dir=tmp_path, unprofiled=2, wait=0, warmup=0, active=2)
    run = prof.profile(lambda n: None, settings, log=lambda *a: None)
    assert seen == [run]
    assert "speedtrace: warning: the host was slow" in capsys.readouterr().err
