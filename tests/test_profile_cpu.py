"""`speedtrace profile` on the CPU with the tiny config: a CPU-only trace set that report reads."""

import gzip
import json
import statistics
import subprocess
import sys

import pytest

UNPROFILED, WAIT, WARMUP, ACTIVE, START = 2, 0, 1, 3, 3


def _profile_cmd(out, launcher=()):
    """`speedtrace profile` on the tiny config, this file's schedule; under ``python -m launcher``."""
    prefix = [sys.executable, "-m", *launcher, "-m"] if launcher else [sys.executable, "-m"]
    return prefix + ["speedtrace", "profile", "--config", "tiny", "--device", "cpu",
                     "--start-step", str(START), "--unprofiled", str(UNPROFILED), "--wait", str(WAIT),
                     "--warmup", str(WARMUP), "--active", str(ACTIVE), "--compile-warmup", "none",
                     "--out", str(out)]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyprof")
    proc = subprocess.run(_profile_cmd(out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace_dir = out / "trace"
    with gzip.open(trace_dir / "rank-0.trace.json.gz") as f:
        trace = json.load(f)
    run = json.loads((trace_dir / "run.json").read_text())
    return trace_dir, trace, run


def _ranges(trace, cat="user_annotation"):
    return [e for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("cat") == cat]


def test_profiler_steps_carry_the_training_step_numbers(profiled):
    _, trace, _ = profiled
    first_active = START + UNPROFILED + WAIT + WARMUP
    names = {e["name"] for e in _ranges(trace) if e["name"].startswith("ProfilerStep#")}
    assert names == {f"ProfilerStep#{n}" for n in range(first_active, first_active + ACTIVE)}


def test_forward_backward_and_per_label_optimizer_ranges(profiled):
    _, trace, _ = profiled
    ranges = _ranges(trace)
    names = {e["name"] for e in ranges}
    assert {"data", "forward", "backward", "optimizer"} <= names
    labels = {n.split("/")[1] for n in names if n.startswith("optimizer/") and n.endswith("/update")}
    # At world size 1 no collective runs: the banks update every step, Adam labels on odd steps.
    assert {"attn_bank", "mlp_bank"} <= labels
    assert {"scalars", "lm_head", "value_embeds", "bigram_embed"} <= labels
    outer = [e for e in ranges if e["name"] == "optimizer"]
    for e in ranges:
        if e["name"].startswith("optimizer/"):
            assert any(o["tid"] == e["tid"] and o["ts"] <= e["ts"] and e["ts"] + e["dur"] <= o["ts"] + o["dur"]
                       for o in outer), e["name"]


def test_run_json_fields(profiled):
    _, _, run = profiled
    for key in ("schema", "config", "variant", "reverts", "mode", "activities", "record_shapes",
                "with_stack", "profile_memory", "unprofiled_step_ms", "profiled_step_ms", "dilation",
                "profiled_steps", "environment", "startup_steps", "launch_records", "cuda_graphs",
                "unprofiled_peak_allocated_mib", "unprofiled_peak_reserved_mib", "dilation_target", "host_bound", "steal_ms"):
        assert key in run, key
    assert run["config"] == "tiny" and run["variant"] == "record" and run["reverts"] == []
    assert run["activities"] == "cpu" and run["mode"] == "timing"
    assert run["startup_steps"] == 1 and run["launch_records"] is False   # the defaults
    assert run["cuda_graphs"] is False   # "auto" turns them on only on CUDA
    assert run["dilation_target"] is None and run["host_bound"] == {"unprofiled": None, "profiled": None}
    env = run["environment"]
    for key in ("git_revision", "torch", "triton", "cuda", "devices", "python"):
        assert key in env, key
    assert len(run["unprofiled_step_ms"]) == UNPROFILED
    # The last active step writes the trace and is left out of the dilation.
    assert len(run["profiled_step_ms"]) == ACTIVE - 1
    expected = statistics.median(run["profiled_step_ms"]) / statistics.median(run["unprofiled_step_ms"])
    assert run["dilation"] == pytest.approx(expected, rel=1e-3)
    assert "step_markers" not in run  # CPU traces carry ProfilerStep annotations instead


def test_report_shows_per_step_cpu_durations(profiled):
    trace_dir, trace, _ = profiled
    proc = subprocess.run([sys.executable, "-m", "speedtrace", "report", str(trace_dir), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (host,) = doc["hosts"]
    expected = {int(e["name"].split("#")[1]): e["dur"] for e in _ranges(trace)
                if e["name"].startswith("ProfilerStep#")}
    got = {s["step"]: s["step_wall_us"] for s in host["steps"]}
    assert got.keys() == expected.keys()
    for n, dur in expected.items():
        assert got[n] == pytest.approx(dur, abs=1e-3)
    assert doc["run"]["dilation"] is not None
    text = subprocess.run([sys.executable, "-m", "speedtrace", "report", str(trace_dir)],
                          capture_output=True, text=True, timeout=120).stdout
    assert "host-side times only" in text and "optimizer/mlp_bank/update" in text


def test_cuda_graphs_on_a_cpu_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speedtrace", "profile", "--config", "tiny", "--device", "cpu",
                           "--cuda-graphs", "on", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["speedtrace profile: error: --cuda-graphs on needs a CUDA device"]


@pytest.mark.parametrize("flag", ["--startup-steps", "--unprofiled", "--active"])
def test_negative_step_counts_are_refused(tmp_path, flag):
    proc = subprocess.run([sys.executable, "-m", "speedtrace", "profile", "--config", "tiny", "--device", "cpu",
                           flag, "-1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"speedtrace profile: error: {flag} must not be negative"]


@pytest.mark.slow
def test_two_gloo_ranks_under_torchrun(tmp_path):
    """`speedtrace profile` under torchrun: a trace per rank that says which rank it is, and each
    label's collective phases (reduce, update, gather) inside the optimizer range on every rank."""
    cmd = _profile_cmd(tmp_path, launcher=("torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace_dir = tmp_path / "trace"
    assert sorted(p.name for p in trace_dir.iterdir()) == ["rank-0.trace.json.gz", "rank-1.trace.json.gz",
                                                           "run.json"]
    assert json.loads((trace_dir / "run.json").read_text())["world_size"] == 2
    for rank in (0, 1):
        with gzip.open(trace_dir / f"rank-{rank}.trace.json.gz") as f:
            trace = json.load(f)
        info = trace["distributedInfo"]
        assert (info["rank"], info["world_size"], info["backend"]) == (rank, 2, "gloo")
        ranges = _ranges(trace)
        names = {e["name"] for e in ranges}
        # PARAM_TABLE by hand: the attention bank is sharded (reduce-scatter, update, all-gather);
        # scalars are replicated (all-reduce, update).
        assert {f"optimizer/attn_bank/{p}" for p in ("reduce", "update", "gather")} <= names, rank
        assert {"optimizer/scalars/reduce", "optimizer/scalars/update"} <= names, rank
        outer = [e for e in ranges if e["name"] == "optimizer"]
        for e in ranges:
            if e["name"].startswith("optimizer/"):
                assert any(o["tid"] == e["tid"] and o["ts"] <= e["ts"] and e["ts"] + e["dur"] <= o["ts"] + o["dur"]
                           for o in outer), (rank, e["name"])
    report = subprocess.run([sys.executable, "-m", "speedtrace", "report", str(trace_dir), "--format", "json"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    # No GPU: each rank is reported from its host side, with its profiled steps.
    hosts = json.loads(report.stdout)["hosts"]
    assert [h["rank"] for h in hosts] == [0, 1]
    assert all(len(h["steps"]) == ACTIVE for h in hosts)
