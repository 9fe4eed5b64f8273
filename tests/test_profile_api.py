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
    assert choose_activities("full", True, None) == "cpu+cuda"
    assert choose_activities("timing", True, "cpu+cuda") == "cpu+cuda"
    assert choose_activities("full", False, None) == "cpu"


@pytest.mark.parametrize("bad", [dict(mode="fast"), dict(active=1), dict(unprofiled=0), dict(activities="gpu")])
def test_bad_settings_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        prof.profile(lambda step: None, prof.ProfileSettings(out_dir=tmp_path, **bad))


def test_user_step_function(tmp_path):
    w = torch.randn(64, 64, requires_grad=True)
    seen = []

    def step(n):
        seen.append(n)
        with torch.profiler.record_function("my_forward"):
            loss = (torch.randn(8, 64) @ w).square().sum()
        loss.backward()
        w.grad = None

    settings = prof.ProfileSettings(out_dir=tmp_path, first_step=100, unprofiled=3, wait=1, warmup=1,
                                    active=3, metadata={"model": "toy"})
    run = prof.profile(step, settings, log=lambda *a: None)
    # 3 unprofiled, then wait 1 + warmup 1 + active 3, numbered from first_step.
    assert seen == list(range(100, 108))
    assert run["profiled_steps"] == [105, 106, 107] and len(run["profiled_step_ms"]) == 2
    assert run["model"] == "toy" and run["activities"] == "cpu"
    assert json.loads((tmp_path / "run.json").read_text()) == run
    with gzip.open(tmp_path / "rank-0.trace.json.gz") as f:
        names = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
    assert {"ProfilerStep#105", "ProfilerStep#106", "ProfilerStep#107", "my_forward"} <= names
