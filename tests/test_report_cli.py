"""`speedtrace report` end to end on a synthetic trace whose numbers are worked out by hand.

The trace (times relative to B; GPU device 0 with 132 SMs; CPU pid 100, thread 1):

  CPU  ProfilerStep#1 [0,100)   forward [5,40)
         aten::mm [10,20) launches (corr 1) gemm                      stream 7   [20,60)  b=1
         nccl:all_reduce [22,29) launches (corr 2) ncclDevKernel_...  stream 20  [40,80)  b=0.25
         aten::copy_ [29,35) launches (corr 3) Memcpy HtoD            stream 7   [90,100)
       ProfilerStep#2 [100,200) backward [105,200)
         aten::select_backward [110,120) launches (corr 6) Memset     stream 7   [140,142)
         aten::mm [150,160) launches (corr 4) gemm                    stream 7   [160,190) b=1
         aten::add [162,166) launches (corr 5) triton_poi_fused_mul_select_backward_0
                                                                      stream 7   [193,197) b=0.5

Whole trace: span 197-20 = 177; busy 60+10+2+30+4 = 106; idle 71 (gaps 10, 40, 18, 3);
compute 40+30+4 = 74; comm 40; overlap [40,60) = 20; exposed comm 20; memory = exposed memory
= 12; 74+20+12+71 = 177. SM efficiency: ∫min(1, Σb) = 20+20+0.25·20+30+0.5·4 = 77 -> 77/177.
Occupancy: (50·40 + 50·30 + 25·4)/74. NCCL queued 40-26 = 14 µs, all of it under the full-SM gemm.
"""

import json
import math

import pytest

from speedtrace.cli import main

B = 1_000_000  # integer µs, so that HTA (which rounds fractional times) reads the same trace
CPU_PID, TID = 100, 1

SPAN = 177.0
TOTALS = {
    "span_us": 177.0, "busy_us": 106.0, "idle_us": 71.0, "compute_us": 74.0, "comm_us": 40.0,
    "memory_us": 12.0, "overlap_us": 20.0, "exposed_comm_us": 20.0, "exposed_memory_us": 12.0,
    "comp_comm_overlap_pct": 50.0, "kernel_count": 4, "comm_kernel_count": 1,
    "est_sm_efficiency_pct": 100 * 77 / 177, "achieved_occupancy_pct": (50 * 40 + 50 * 30 + 25 * 4) / 74,
    "sm_contention_us": 20.0, "comm_queue_us": 14.0, "comm_queue_full_sm_us": 14.0,
    "select_backward_kernels": 1, "select_backward_us": 2.0, "select_backward_fused_kernels": 1,
    "select_backward_cpu_ops": 1,
}
ENTRY_KEYS = {"rank", "device_id", "device", "num_sms", "origin_ts_us", "step_source", "totals",
              "steps", "phases", "gaps", "gaps_below_threshold", "kernels"}
GAP_KEYS = {"kind", "start_us", "dur_us", "step", "phase", "cpu_op", "cause"}
KERNEL_KEYS = {"key", "class", "count", "total_us", "mean_us", "max_us", "mean_blocks_per_sm",
               "mean_occupancy_pct", "streams"}


# ---------------------------------------------------------------------------- the trace


def cpu(cat, name, t0, t1, **args):
    e = {"ph": "X", "cat": cat, "name": name, "pid": CPU_PID, "tid": TID, "ts": B + t0, "dur": t1 - t0}
    if args:
        e["args"] = args
    return e


def launch(name, t0, t1, corr):
    return cpu("cuda_driver" if name.startswith("cu") and not name.startswith("cuda") else "cuda_runtime",
               name, t0, t1, correlation=corr)


def gpu(cat, name, t0, t1, stream, corr, b=None, grid=None, occ=None):
    args = {"device": 0, "stream": stream, "correlation": corr, "context": 1}
    if b is not None:
        args.update({"blocks per SM": b, "grid": grid, "block": [128, 1, 1],
                     "est. achieved occupancy %": occ})
    return {"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": stream, "ts": B + t0,
            "dur": t1 - t0, "args": args}


def synthetic_trace(rank=0, world_size=1, with_rank=True, **meta) -> dict:
    events = [
        cpu("user_annotation", "ProfilerStep#1", 0, 100),
        cpu("user_annotation", "forward", 5, 40),
        cpu("cpu_op", "aten::mm", 10, 20),
        launch("cudaLaunchKernel", 12, 14, 1),
        gpu("kernel", "gemm", 20, 60, 7, 1, b=1.0, grid=[132, 1, 1], occ=50),
        cpu("cpu_op", "nccl:all_reduce", 22, 29),
        launch("cudaLaunchKernel", 24, 26, 2),
        gpu("kernel", "ncclDevKernel_AllReduce_Sum_f32_RING_LL", 40, 80, 20, 2, b=0.25,
            grid=[33, 1, 1], occ=12),
        cpu("cpu_op", "aten::copy_", 29, 35),
        launch("cudaMemcpyAsync", 30, 32, 3),
        gpu("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", 90, 100, 7, 3),
        cpu("user_annotation", "ProfilerStep#2", 100, 200),
        cpu("user_annotation", "backward", 105, 200),
        cpu("cpu_op", "aten::select_backward", 110, 120),
        launch("cudaMemsetAsync", 111, 112, 6),
        gpu("gpu_memset", "Memset (Device)", 140, 142, 7, 6),
        cpu("cpu_op", "aten::mm", 150, 160),
        launch("cudaLaunchKernel", 152, 154, 4),
        gpu("kernel", "gemm", 160, 190, 7, 4, b=1.0, grid=[132, 1, 1], occ=50),
        cpu("cpu_op", "aten::add", 162, 166),
        launch("cuLaunchKernel", 163, 164, 5),
        gpu("kernel", "triton_poi_fused_mul_select_backward_0", 193, 197, 7, 5, b=0.5,
            grid=[66, 1, 1], occ=25),
    ]
    trace = {"schemaVersion": 1,
             "deviceProperties": [{"id": 0, "name": "Test GPU", "numSms": 132}]}
    if with_rank:
        trace["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": world_size}
    trace.update(meta)
    trace["traceEvents"] = events
    return trace


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def trace_file(tmp_path):
    return write_json(tmp_path / "rank-0.trace.json", synthetic_trace())


def report(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def report_json(capsys, *argv) -> dict:
    rc, out, err = report(capsys, *argv, "--format", "json")
    assert rc == 0, err
    return json.loads(out)


def approx(x):
    return pytest.approx(x, abs=1e-6)


# ---------------------------------------------------------------------------- JSON


def test_json_shape_and_totals(capsys, trace_file):
    rep = report_json(capsys, trace_file)
    assert rep["schema"] == "speedtrace.report/1"
    assert {"schema", "run", "warnings", "ranks"} <= set(rep)
    assert rep["run"] is None  # no run.json beside a single file
    assert len(rep["ranks"]) == 1
    entry = rep["ranks"][0]
    assert ENTRY_KEYS <= set(entry)
    assert (entry["rank"], entry["device_id"], entry["device"], entry["num_sms"]) == (0, 0, "Test GPU", 132)
    assert entry["step_source"] == "cpu_annotation"
    assert entry["origin_ts_us"] == approx(B + 20)  # the first GPU start
    for key, want in TOTALS.items():
        assert entry["totals"][key] == approx(want), key


def test_json_steps(capsys, trace_file):
    steps = report_json(capsys, trace_file)["ranks"][0]["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    s1, s2 = (s["totals"] for s in steps)
    assert [s["step_wall_us"] for s in steps] == [approx(100), approx(100)]
    # step 1: gemm, nccl, memcpy -> span [20,100)
    assert (s1["span_us"], s1["busy_us"], s1["idle_us"], s1["compute_us"]) == (approx(80), approx(70),
                                                                                 approx(10), approx(40))
    assert (s1["exposed_comm_us"], s1["comp_comm_overlap_pct"]) == (approx(20), approx(50))
    # step 2: memset, gemm, triton -> span [140,197), no comm
    assert (s2["span_us"], s2["busy_us"], s2["idle_us"], s2["compute_us"]) == (approx(57), approx(36),
                                                                                 approx(21), approx(34))
    assert s2["comm_us"] == approx(0) and s2["comp_comm_overlap_pct"] is None


def test_json_gaps_and_kernels(capsys, trace_file):
    entry = report_json(capsys, trace_file)["ranks"][0]
    gaps = entry["gaps"]
    assert all(GAP_KEYS <= set(g) for g in gaps)
    assert [(g["kind"], g["dur_us"]) for g in gaps] == [
        ("idle", approx(40)), ("exposed_comm", approx(20)), ("idle", approx(18)), ("idle", approx(10))]
    g40, _, g18, g10 = gaps
    assert g40["start_us"] == approx(80)  # [100,140) relative to the first GPU start, 20
    assert (g40["phase"], g40["cpu_op"], g40["cause"]) == ("backward", "aten::select_backward", "host_late")
    assert (g18["phase"], g18["cpu_op"], g18["cause"]) == ("backward", "aten::mm", "host_late")
    assert (g10["phase"], g10["cpu_op"], g10["cause"]) == ("forward", "aten::copy_", "dependency")
    assert entry["gaps_below_threshold"] == {"count": 1, "total_us": approx(3)}

    kernels = {k["key"]: k for k in entry["kernels"]}
    assert all(KERNEL_KEYS <= set(k) for k in entry["kernels"])
    gemm = kernels["gemm"]
    assert (gemm["count"], gemm["total_us"], gemm["mean_us"], gemm["max_us"]) == (2, approx(70), approx(35),
                                                                                   approx(40))
    assert gemm["class"] == "compute" and gemm["mean_blocks_per_sm"] == approx(1.0)
    assert kernels["ncclDevKernel_AllReduce_Sum_f32_RING_LL"]["class"] == "comm"
    # Inductor's trailing counter is dropped from the key
    assert kernels["triton_poi_fused_mul_select_backward"]["total_us"] == approx(4)


def test_json_has_no_nan(capsys, trace_file):
    rc, out, _ = report(capsys, trace_file, "--format", "json")
    assert rc == 0
    assert "NaN" not in out and "Infinity" not in out
    json.loads(out)


# ---------------------------------------------------------------------------- options


def test_top_caps_gaps_and_kernels(capsys, trace_file):
    entry = report_json(capsys, trace_file, "--top", "2")["ranks"][0]
    assert [g["dur_us"] for g in entry["gaps"]] == [approx(40), approx(20)]
    assert [k["key"] for k in entry["kernels"]] == ["gemm", "ncclDevKernel_AllReduce_Sum_f32_RING_LL"]


def test_min_gap_us(capsys, trace_file):
    entry = report_json(capsys, trace_file, "--min-gap-us", "2")["ranks"][0]
    assert sorted(g["dur_us"] for g in entry["gaps"]) == [approx(3), approx(10), approx(18), approx(20),
                                                          approx(40)]
    assert entry["gaps_below_threshold"]["count"] == 0
    entry = report_json(capsys, trace_file, "--min-gap-us", "15")["ranks"][0]
    assert [g["dur_us"] for g in entry["gaps"]] == [approx(40), approx(20), approx(18)]
    assert entry["gaps_below_threshold"] == {"count": 2, "total_us": approx(13)}


@pytest.mark.parametrize("arg, want", [("2", [2]), ("1-2", [1, 2]), ("1", [1])])
def test_steps_selects_steps(capsys, trace_file, arg, want):
    entry = report_json(capsys, trace_file, "--steps", arg)["ranks"][0]
    assert [s["step"] for s in entry["steps"]] == want
    if want == [2]:  # whole totals then cover step 2's GPU activity only
        assert entry["totals"]["span_us"] == approx(57)
        assert entry["totals"]["comm_us"] == approx(0)


@pytest.mark.parametrize("arg", ["x", "3-1", "1-", "-2", "1-2-3", ""])
def test_bad_steps_value(capsys, trace_file, arg):
    rc, out, err = report(capsys, trace_file, "--steps", arg)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "--steps" in err


def test_steps_not_in_trace(capsys, trace_file):
    rc, out, err = report(capsys, trace_file, "--steps", "5-7")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and str(trace_file) in err and "1-2" in err


@pytest.mark.parametrize("option, value", [("--top", "-1"), ("--top", "many"), ("--min-gap-us", "nan"),
                                           ("--min-gap-us", "-3"), ("--rank", "x")])
def test_bad_numeric_options(capsys, trace_file, option, value):
    rc, out, err = report(capsys, trace_file, option, value)
    assert rc == 2 and out == "" and err.count("\n") == 1 and option in err


def test_rank_selects_and_rejects(capsys, tmp_path):
    for r in (0, 1):
        write_json(tmp_path / f"rank-{r}.trace.json", synthetic_trace(rank=r, world_size=2))
    rep = report_json(capsys, tmp_path)
    assert [e["rank"] for e in rep["ranks"]] == [0, 1]
    rep = report_json(capsys, tmp_path, "--rank", "1")
    assert [e["rank"] for e in rep["ranks"]] == [1]
    rc, out, err = report(capsys, tmp_path, "--rank", "3")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "rank 3" in err and str(tmp_path) in err


# ---------------------------------------------------------------------------- text and markdown


def test_text_summary(capsys, trace_file):
    rc, out, _ = report(capsys, trace_file)
    assert rc == 0
    assert "Test GPU" in out and "132 SMs" in out
    # the breakdown as µs and % of span
    compute = next(line.split() for line in out.splitlines() if line.strip().startswith("compute "))
    assert compute[1:] == ["74.0", f"{100 * 74 / SPAN:.1f}%"]                # compute: µs, % of span
    assert f"{100 * 20 / SPAN:.1f}%" in out                                # exposed comm
    assert f"{100 * 12 / SPAN:.1f}%" in out and f"{100 * 71 / SPAN:.1f}%" in out
    assert "50.0% of comm time overlaps compute" in out
    assert f"est. SM efficiency {100 * 77 / 177:.1f}%" in out
    assert "1 dedicated kernel (2.0 µs), 1 fused, 1 aten::select_backward op" in out
    gap_line = next(line for line in out.splitlines() if "aten::select_backward" in line and "host_late" in line)
    assert "40.0" in gap_line and "backward" in gap_line
    assert "gemm" in out and "70.0" in out                                 # top kernel
    step_lines = [line.split() for line in out.splitlines() if line.strip()[:2] in ("1 ", "2 ")]
    assert [s[0] for s in step_lines] == ["1", "2"] and step_lines[0][1] == "0.10"  # wall ms


def test_markdown_tables(capsys, trace_file):
    rc, out, _ = report(capsys, trace_file, "--format", "md")
    assert rc == 0
    assert out.startswith("# speedtrace report")
    assert "|---" in out
    rows = [line for line in out.splitlines() if line.startswith("| compute |")]
    assert rows == [f"| compute | 74.0 | {100 * 74 / SPAN:.1f}% |"]
    assert any(line.startswith("| idle | 40.0 |") for line in out.splitlines())  # gaps table
    assert "`gemm`" in out


def test_many_ranks_text_is_compact(capsys, tmp_path):
    for r in range(4):
        write_json(tmp_path / f"rank-{r}.trace.json", synthetic_trace(rank=r, world_size=4))
    rc, out, _ = report(capsys, tmp_path)
    assert rc == 0
    assert out.count("longest gaps") == 1  # one detailed block, not four
    assert "details for the worst of 4 entries" in out
    table = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [row[0] for row in table] == ["0", "1", "2", "3"]


# ---------------------------------------------------------------------------- dilation warning


def test_dilation_warning_from_record_shapes(capsys, tmp_path):
    path = write_json(tmp_path / "rank-0.trace.json", synthetic_trace(record_shapes=1))
    rep = report_json(capsys, path)
    dilated = [w for w in rep["warnings"] if "dilated" in w]
    assert len(dilated) == 1 and "record_shapes" in dilated[0] and str(path) in dilated[0]
    for number in ("idle", "host_late", "step time"):
        assert number in dilated[0]
    rc, out, _ = report(capsys, path)
    assert out.splitlines()[1].startswith("warning:") and "dilated" in out.splitlines()[1]


def test_no_dilation_warning_for_plain_trace(capsys, trace_file):
    assert not [w for w in report_json(capsys, trace_file)["warnings"] if "dilated" in w]


def test_dilation_warning_from_run_json(capsys, tmp_path):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"schema": "speedtrace.run/1", "mode": "full",
                                       "unprofiled_step_ms": [100.0], "profiled_step_ms": [120.0],
                                       "dilation": 1.2})
    rep = report_json(capsys, tmp_path)
    assert rep["run"] == {"dilation": 1.2, "unprofiled_step_ms": [100.0], "profiled_step_ms": [120.0],
                          "mode": "full", "cuda_graphs": None, "unprofiled_host_ms": [], "profiled_host_ms": [],
                          "host_bound": {"unprofiled": None, "profiled": None}, "dilation_target": None,
                          "steal_ms": {"unprofiled": None, "profiled": None}}
    dilated = [w for w in rep["warnings"] if "dilated" in w]
    assert len(dilated) == 1 and "1.20" in dilated[0] and "run.json" in dilated[0]
    rc, out, _ = report(capsys, tmp_path)
    assert "dilation 1.200" in out and "120.0 ms per step vs 100.0 ms" in out


@pytest.mark.parametrize("profiled_host, bound", [([119.0, 117.0, 118.0], True), ([80.0, 90.0, 85.0], False)])
def test_dilation_warning_says_when_the_host_was_the_critical_path(capsys, tmp_path, profiled_host, bound):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [100.0, 101.0, 99.0], "profiled_step_ms": [120.0, 121.0, 119.0],
                                       "unprofiled_host_ms": [70.0, 72.0, 71.0], "profiled_host_ms": profiled_host})
    rep = report_json(capsys, tmp_path)
    assert rep["run"]["profiled_host_ms"] == profiled_host
    (dilated,) = [w for w in rep["warnings"] if "dilated" in w]
    # Medians: host 118.0 (or 85.0) of a 120.0 ms step; 0.95 x 120 = 114.
    assert ("critical path" in dilated) is bound
    if bound:
        assert "returned 118.0 ms into each 120.0 ms profiled step" in dilated
    rc, out, _ = report(capsys, tmp_path)
    host = 118.0 if bound else 85.0
    assert f"host done {host:.1f} ms into the profiled step (71.0 unprofiled)" in out


def test_a_host_verdict_without_host_times_is_no_traceback(capsys, tmp_path):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"dilation": 1.2, "host_bound": {"unprofiled": True, "profiled": True}})
    rep = report_json(capsys, tmp_path)
    assert any("run.json has no unprofiled host and step times" in w for w in rep["warnings"])
    assert any("run.json has no profiled host and step times" in w for w in rep["warnings"])


def test_run_line_shows_the_mode_target(capsys, tmp_path):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [228.0], "profiled_step_ms": [245.0], "dilation": 1.0741,
                                       "mode": "full", "dilation_target": 1.05})
    assert report_json(capsys, tmp_path)["run"]["dilation_target"] == 1.05
    rc, out, _ = report(capsys, tmp_path)
    assert "dilation 1.074 (target 1.05)" in out and "steal" not in out
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [228.0], "profiled_step_ms": [245.0], "dilation": 1.0741,
                                       "steal_ms": {"unprofiled": 60.0, "profiled": 30.0}})
    assert report_json(capsys, tmp_path)["run"]["steal_ms"] == {"unprofiled": 60.0, "profiled": 30.0}
    rc, out, _ = report(capsys, tmp_path)
    assert "60 ms during the unprofiled steps, 30 ms during the profiled ones" in out


@pytest.mark.parametrize("given", [None, True, False])
def test_warning_when_the_unprofiled_steps_were_host_bound(capsys, tmp_path, given):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    # Host medians 272.0 of 272.5 ms unprofiled steps (0.95 x 272.5 = 258.9): host-bound by the times.
    run = {"unprofiled_step_ms": [272.0, 272.5, 273.0], "profiled_step_ms": [290.0, 291.0, 289.0],
           "unprofiled_host_ms": [271.0, 272.0, 272.5], "profiled_host_ms": [289.0, 290.0, 288.0]}
    if given is not None:
        # run.json's own verdict wins over the times (a CPU run writes None: the host is the device).
        run["host_bound"] = {"unprofiled": given, "profiled": given}
    write_json(tmp_path / "run.json", run)
    rep = report_json(capsys, tmp_path)
    bound = given is not False
    assert rep["run"]["host_bound"] == {"unprofiled": bound, "profiled": bound}
    warned = [w for w in rep["warnings"] if "unprofiled steps were host-bound" in w]
    assert len(warned) == int(bound)
    if bound:
        assert "returned 272.0 ms into each 272.5 ms unprofiled step" in warned[0]
        assert "run.json" in warned[0]


def test_run_line_says_when_micro_batches_were_graph_replays(capsys, tmp_path):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [100.0], "profiled_step_ms": [101.0],
                                       "mode": "timing", "cuda_graphs": True})
    assert report_json(capsys, tmp_path)["run"]["cuda_graphs"] is True
    rc, out, _ = report(capsys, tmp_path)
    assert "mode timing, micro-batches replayed as CUDA graphs" in out
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [100.0], "profiled_step_ms": [101.0],
                                       "mode": "full", "cuda_graphs": False})
    rc, out, _ = report(capsys, tmp_path)
    assert "mode full" in out and "CUDA graphs" not in out


def test_small_dilation_gives_no_warning(capsys, tmp_path):
    write_json(tmp_path / "rank-0.trace.json", synthetic_trace())
    write_json(tmp_path / "run.json", {"unprofiled_step_ms": [100.0], "profiled_step_ms": [105.0]})
    rep = report_json(capsys, tmp_path)
    assert rep["run"]["dilation"] == approx(1.05)  # worked out when run.json omits it
    assert not [w for w in rep["warnings"] if "dilated" in w]


# ---------------------------------------------------------------------------- bundled samples


def _gpu_span_of_sample(path) -> float:
    """Span of GPU activity read with the standard library, independently of the loader."""
    import gzip

    with gzip.open(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    gpu_events = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    return max(e["ts"] + e["dur"] for e in gpu_events) - min(e["ts"] for e in gpu_events)


def test_default_sample_is_the_bundled_trainer(capsys):
    """No PATH: the record variant of the bundled trainer, five profiled H200 steps."""
    import statistics

    from speedtrace.samples import sample_path

    rep = report_json(capsys)
    run = json.loads((sample_path("h200-record") / "run.json").read_text())
    entry = rep["ranks"][0]
    assert entry["device"] == "NVIDIA H200" and entry["num_sms"] == 132
    assert [s["step"] for s in entry["steps"]] == list(range(run["sample_steps"][0], run["sample_steps"][1] + 1))
    expected = statistics.median(run["profiled_step_ms"]) / statistics.median(run["unprofiled_step_ms"])
    assert rep["run"]["dilation"] == pytest.approx(expected, abs=1e-4)
    # The dilation warning comes exactly when the sample's run measured more than 1.10.
    assert any("dilation" in w for w in rep["warnings"]) == (expected > 1.10)
    assert entry["totals"]["select_backward_kernels"] > 0


def test_original_trainer_sample_shows_real_numbers(capsys):
    from speedtrace.samples import sample_path

    rep = report_json(capsys, "--sample", "h200-speedrun")
    entry = rep["ranks"][0]
    assert entry["device"] == "NVIDIA H200" and entry["num_sms"] == 132
    span = _gpu_span_of_sample(sample_path("h200-speedrun") / "rank-0.trace.json.gz")
    t = entry["totals"]
    assert t["span_us"] == pytest.approx(span, abs=1e-3)
    assert 0.9 < t["busy_us"] / t["span_us"] <= 1.0          # data README: GPU busy 96%
    assert 85 < t["est_sm_efficiency_pct"] <= 100            # data README: 94% over two steps
    assert [s["step"] for s in entry["steps"]] == [12]
    assert rep["run"]["dilation"] == approx(round(251.71 / 248.0, 4))
    rc, out, _ = report(capsys, "--sample", "h200-speedrun")
    assert rc == 0 and "NVIDIA H200" in out and "dilation 1.015" in out


def test_sample_option(capsys):
    rep = report_json(capsys, "--sample", "nccl-a100")
    entry = rep["ranks"][0]
    assert entry["device"].startswith("NVIDIA A100") and entry["totals"]["comm_kernel_count"] > 0
    assert math.isfinite(entry["totals"]["comp_comm_overlap_pct"])


def test_sample_list_and_unknown(capsys, trace_file):
    rc, out, _ = report(capsys, "--sample", "list")
    assert rc == 0 and "h200-speedrun" in out and "nccl-a100" in out
    rc, out, err = report(capsys, "--sample", "nope")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "nope" in err and "h200-speedrun" in err and "nccl-a100" in err
    rc, out, err = report(capsys, trace_file, "--sample", "nccl-a100")
    assert rc == 2 and err.count("\n") == 1


def test_trace_without_steps(capsys, tmp_path):
    trace = synthetic_trace()
    trace["traceEvents"] = [e for e in trace["traceEvents"] if not e["name"].startswith("ProfilerStep#")]
    path = write_json(tmp_path / "rank-0.trace.json", trace)
    entry = report_json(capsys, path)["ranks"][0]
    assert entry["step_source"] == "none" and entry["steps"] == []
    assert entry["totals"]["span_us"] == approx(SPAN)
    rc, out, _ = report(capsys, path)
    assert "steps: none found" in out


def test_long_cpp_kernel_names_are_folded():
    from speedtrace.analysis.fmt import kernel_name as _kernel_name

    name = "void at::native::elementwise_kernel<128, 4, at::native::Fn>(int, at::native::Fn, float*)"
    assert _kernel_name(name, 60) == "at::native::elementwise_kernel<128, 4, at::native::Fn>(…)"
    assert _kernel_name("short(int)", 60) == "short(int)"
    assert len(_kernel_name("x" * 100, 60)) == 60
