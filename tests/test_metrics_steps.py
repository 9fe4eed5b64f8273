"""Step windows from each source of metrics.md "Steps", and per-step totals."""

import json

import pytest
from synth import Trace

from speedtrace.analysis import metrics
from speedtrace.analysis.load import load, load_rank_file
from speedtrace.analysis.metrics import device_report

BASE = 5e12


def report(trace, tmp_path, run=None, **kw):
    rt = load_rank_file(trace.write(tmp_path / "rank-0.trace.json"))
    return device_report(rt, 0, run, **kw)


def by_step(r):
    return {s["step"]: s for s in r["steps"]}


def cpu_step_trace():
    """ProfilerStep#3 [0,50), #4 [50,100) on the main thread (CPU times).

    kernel  launch  GPU
      a       10    [20,30)   step 3
      b       45    [60,70)   step 3: its launch is in step 3, though it runs during step 4
      c       55    [75,80)   step 4
      d       --    [90,95)   no launch: unassigned
    """
    t = Trace()
    t.step(3, 0, 50)
    t.step(4, 50, 50)
    t.launch_kernel("a", 10, 20, 10)
    t.launch_kernel("b", 45, 60, 10)
    t.launch_kernel("c", 55, 75, 5)
    t.kernel("d", 90, 5)
    return t


def test_cpu_annotation_steps_by_launch(tmp_path):
    r = report(cpu_step_trace(), tmp_path)
    assert r["step_source"] == "cpu_annotation"
    steps = by_step(r)
    assert list(steps) == [3, 4]
    assert steps[3]["step_wall_us"] == pytest.approx(50)
    s3, s4 = steps[3]["totals"], steps[4]["totals"]
    assert (s3["kernel_count"], s3["busy_us"], s3["span_us"]) == (2, pytest.approx(20), pytest.approx(50))
    assert (s4["kernel_count"], s4["busy_us"], s4["span_us"]) == (1, pytest.approx(5), pytest.approx(5))
    assert steps[4]["start_us"] == pytest.approx(55)  # relative to the first GPU start (20)
    assert r["totals"]["unassigned_gpu_us"] == pytest.approx(5)
    assert r["totals"]["span_us"] == pytest.approx(75) and r["totals"]["kernel_count"] == 4


def test_step_range_limits_whole_trace_totals(tmp_path):
    r = report(cpu_step_trace(), tmp_path, step_range=(4, 4))
    assert [s["step"] for s in r["steps"]] == [4]
    assert r["totals"]["kernel_count"] == 1 and r["totals"]["busy_us"] == pytest.approx(5)
    assert [k["key"] for k in r["kernels"]] == ["c"]
    r = report(cpu_step_trace(), tmp_path, step_range=(7, 9))
    assert r["steps"] == [] and r["totals"]["kernel_count"] == 0


def test_gpu_annotation_steps_by_gpu_start(tmp_path):
    t = Trace()
    t.gpu_annotation("ProfilerStep#5", 0, 40)
    t.gpu_annotation("ProfilerStep#6", 40, 40)
    t.kernel("a", 10, 10)
    t.kernel("b", 45, 5)
    t.kernel("c", 85, 5)  # after the last window
    r = report(t, tmp_path)
    assert r["step_source"] == "gpu_annotation"
    steps = by_step(r)
    assert steps[5]["totals"]["busy_us"] == pytest.approx(10) and steps[5]["step_wall_us"] is None
    assert steps[6]["totals"]["busy_us"] == pytest.approx(5)
    assert r["totals"]["unassigned_gpu_us"] == pytest.approx(5)
    # gpu_user_annotation is not GPU activity: the span runs from a to c only
    assert r["totals"]["span_us"] == pytest.approx(80)


def test_recorded_step_markers(tmp_path):
    """Markers at 0, 40 and 80 open steps 7 and 8 and close step 8 (run.json step_markers)."""
    t = Trace()
    for at in (0, 40, 80):
        t.kernel("speedtrace_step_marker", at, 1, grid=1)
    t.kernel("a", 10, 10)
    t.kernel("b", 50, 5)
    t.kernel("c", 85, 5)
    t.write(tmp_path / "rank-0.trace.json")
    (tmp_path / "run.json").write_text(json.dumps(
        {"step_markers": {"kernel": "speedtrace_step_marker", "steps": [7, 8]}}))
    ts = load(tmp_path)
    steps = {s["step"]: s for s in metrics.steps(ts)}
    assert list(steps) == [7, 8]
    # step 7: marker [0,1) + a [10,20); step 8: marker [40,41) + b [50,55)
    assert steps[7]["kernel_count"] == 2 and steps[7]["busy_us"] == pytest.approx(11)
    assert steps[8]["span_us"] == pytest.approx(15)
    # the closing marker [80,81) and c [85,90) are in no step
    assert metrics.totals(ts)[0]["unassigned_gpu_us"] == pytest.approx(6)
    assert metrics.totals(ts)[0]["step_source"] == "recorded"


def test_recorded_step_boundaries_in_absolute_time(tmp_path):
    t = Trace()
    t.kernel("a", 10, 10)
    t.kernel("b", 35, 5)
    run = {"step_boundaries": [{"step": 2, "start_us": BASE + 0, "end_us": BASE + 30},
                               {"step": 3, "start_us": BASE + 30, "end_us": BASE + 60}]}
    r = report(t, tmp_path, run=run)
    assert r["step_source"] == "recorded"
    assert by_step(r)[2]["totals"]["busy_us"] == pytest.approx(10)
    assert by_step(r)[3]["totals"]["busy_us"] == pytest.approx(5)
    assert r["totals"]["unassigned_gpu_us"] == 0


def test_cpu_annotation_wins_over_other_sources(tmp_path):
    t = cpu_step_trace()
    t.gpu_annotation("ProfilerStep#99", 0, 200)
    r = report(t, tmp_path, run={"step_boundaries": [{"step": 1, "start_us": BASE, "end_us": BASE + 500}]})
    assert r["step_source"] == "cpu_annotation" and [s["step"] for s in r["steps"]] == [3, 4]


def test_no_step_source(tmp_path):
    t = Trace()
    t.kernel("a", 0, 10)
    r = report(t, tmp_path, run={"step_markers": {"kernel": "not_in_trace", "steps": [1]}})
    assert r["step_source"] == "none" and r["steps"] == []
    assert r["totals"]["unassigned_gpu_us"] is None
    r = report(t, tmp_path, run={"step_boundaries": "garbage"})
    assert r["step_source"] == "none"
