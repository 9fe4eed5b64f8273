"""The bundled sample trace sets: present, small, shipped as package data, honest run.json."""

import fnmatch
import gzip
import json

import pytest
from conftest import shared_path

from speedtrace.errors import SpeedtraceError
from speedtrace.samples import DEFAULT_SAMPLE, HERE, SAMPLES, list_samples, sample_path

MAX_BYTES = 5 * 1024 * 1024
# The [tool.setuptools.package-data] patterns of pyproject.toml for speedtrace.samples.
PACKAGE_DATA = ("*/*.json", "*/*.json.gz")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def read(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def sample_files():
    return sorted(p for name in SAMPLES for p in sample_path(name).iterdir() if p.is_file())


def test_every_sample_exists_and_is_small():
    assert DEFAULT_SAMPLE in SAMPLES
    for name in SAMPLES:
        traces = list(sample_path(name).glob("*.json.gz"))
        assert traces, name
        assert sum(p.stat().st_size for p in sample_path(name).iterdir()) <= MAX_BYTES


def test_every_sample_file_is_package_data():
    for p in sample_files():
        rel = p.relative_to(HERE).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in PACKAGE_DATA), rel


def test_unknown_sample_lists_the_names():
    with pytest.raises(SpeedtraceError) as exc:
        sample_path("no-such-sample")
    assert all(name in str(exc.value) for name in SAMPLES)
    assert all(name in list_samples() for name in SAMPLES)


def test_speedrun_sample_is_one_whole_step():
    trace = read(sample_path("h200-speedrun") / "rank-0.trace.json.gz")
    events = trace["traceEvents"]
    assert trace["deviceProperties"][0]["numSms"] == 132 and trace["distributedInfo"]["rank"] == 0
    steps = [e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep#")]
    assert [e["name"] for e in steps] == ["ProfilerStep#12"]
    t0, t1 = steps[0]["ts"], steps[0]["ts"] + steps[0]["dur"]
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATS]
    assert len(gpu) > 5000
    # every GPU event kept was launched inside the step's CPU window
    assert all(t0 <= launches[e["args"]["correlation"]] < t1 for e in gpu)
    # every CPU event kept overlaps that window
    cpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "cuda_runtime", "cuda_driver")]
    assert all(e["ts"] < t1 and e["ts"] + e["dur"] > t0 for e in cpu)


def test_speedrun_run_json_matches_its_trace():
    folder = sample_path("h200-speedrun")
    run = json.loads((folder / "run.json").read_text())
    step = next(e for e in read(folder / "rank-0.trace.json.gz")["traceEvents"]
                if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep#"))
    assert run["schema"] == "speedtrace.run/1" and run["mode"] == "full"
    assert run["unprofiled_step_ms"] == [248.0]
    assert run["profiled_step_ms"] == [pytest.approx(step["dur"] / 1000, abs=1e-3)]
    assert run["dilation"] == pytest.approx(step["dur"] / 1000 / 248.0, abs=1e-4)


def test_make_samples_reproduces_the_bundled_files(tmp_path):
    from speedtrace.samples.make_samples import main

    data = shared_path()
    assert main(["--data", str(data), "--out", str(tmp_path)]) == 0
    # The trainer's own samples come from GPU profile runs, not from shared data.
    for p in sample_files():
        if p.suffix in (".json", ".gz") and p.parent.name in ("h200-speedrun", "nccl-a100"):
            rel = p.relative_to(HERE)
            assert (tmp_path / rel).read_bytes() == p.read_bytes(), rel
