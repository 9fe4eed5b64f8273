"""`speedtrace diff`: synthetic before/after pairs with known differences, numbers by hand.

The main pair (three profiler steps a side, one H200 with 132 SMs, every kernel on all SMs):

    before, each step: gemm_kernel (g µs, aten::mm, "forward", occupancy 50%)
                       triton_poi_fused_add_mul_3 (20, "forward", 25%)
                       triton_poi_fused__to_copy_add_mul_4 (30, "optimizer", 25%)
                       -- 50 µs idle --
                       lerp_kernel (10, aten::lerp_, "optimizer", 25%)
                       old_kernel (8, aten::foo, "optimizer", 25%)
    after, each step:  gemm_kernel (g), triton_poi_fused_add_mul_5 (20),
                       triton_poi_fused__to_copy_add_lerp_mul_7 (33, "optimizer")

with g = 100, 102, 98 before and 101, 99, 100 after. Per step: before span g + 118, busy
g + 68, idle 50; after span = busy = g + 53.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path
from synth import Trace

from speedtrace.analysis import kernel_match as km
from speedtrace.analysis import sums as sm
from speedtrace.analysis.diff import build_diff, gap_status, kernel_status
from speedtrace.analysis.diff_sections import diff_sections
from speedtrace.analysis.load import load
from speedtrace.analysis.noise import significance
from speedtrace.analysis.render import render
from speedtrace.cli import main

STEP_US = 1000.0


def layout_before(g):
    # (name, dur, idle before it, launching aten op or None, phase, occupancy %)
    return [("gemm_kernel", g, 0, "aten::mm", "forward", 50),
            ("triton_poi_fused_add_mul_3", 20, 0, None, "forward", 25),
            ("triton_poi_fused__to_copy_add_mul_4", 30, 0, None, "optimizer", 25),
            ("lerp_kernel", 10, 50, "aten::lerp_", "optimizer", 25),
            ("old_kernel", 8, 0, "aten::foo", "optimizer", 25)]


def layout_after(g):
    return [("gemm_kernel", g, 0, "aten::mm", "forward", 50),
            ("triton_poi_fused_add_mul_5", 20, 0, None, "forward", 25),
            ("triton_poi_fused__to_copy_add_lerp_mul_7", 33, 0, None, "optimizer", 25)]


def write_trace(path: Path, steps: list[list[tuple]], *, annotate_steps: bool = True, rank: int = 0,
                metadata: dict | None = None) -> Path:
    """One rank file: each step 1 ms apart, its kernels back to back after the given idle; each
    launched 3 µs before it starts inside its CPU op, inside its phase annotation."""
    t = Trace(rank=rank, metadata=metadata)
    for j, kernels in enumerate(steps):
        base = j * STEP_US
        if annotate_steps:
            t.step(j + 1, base, 900)
        cursor = base + 20
        for name, dur, idle, op, phase, occ in kernels:
            start = cursor + idle
            launch = start - 3
            t.annotation(phase, launch - 1, 3)
            t.cpu_op(op or name, launch - 0.5, 2)
            t.launch_kernel(name, launch, start, dur, grid=132, occupancy=occ)
            cursor = start + dur
    return t.write(path / f"rank-{rank}.trace.json")


def make_set(tmp_path: Path, name: str, layouts, *, run: dict | None = None, **kw) -> Path:
    d = tmp_path / name
    d.mkdir()
    write_trace(d, layouts, **kw)
    if run is not None:
        (d / "run.json").write_text(json.dumps(run))
    return d


@pytest.fixture
def pair(tmp_path):
    before = make_set(tmp_path, "before", [layout_before(g) for g in (100, 102, 98)])
    after = make_set(tmp_path, "after", [layout_after(g) for g in (101, 99, 100)])
    return before, after


@pytest.fixture
def doc(pair):
    return build_diff(load(pair[0]), load(pair[1]))


def kernel(doc, key):
    return next(k for k in doc["kernels"] if k["key"] == key)


# ------------------------------------------------------------------------ op-name sets


@pytest.mark.parametrize("name, ops", [
    ("triton_poi_fused__to_copy_add_lerp_mul_7", {"_to_copy", "add", "lerp", "mul"}),
    # copy_ (in-place) is written copy_ + separator: "copy__div"
    ("triton_poi_fused__to_copy_add_copy__div_gt_mul_sqrt_0",
     {"_to_copy", "add", "copy", "div", "gt", "mul", "sqrt"}),
    ("triton_per_fused__fused_rms_norm__fused_rms_norm_backward_add_mul_sum_view_23",
     {"_fused_rms_norm", "_fused_rms_norm_backward", "add", "mul", "sum", "view"}),
    ("triton_poi_fused___lshift_____rshift____to_copy_bitwise_or_copy__ge_mul_sub_view_0",
     {"__lshift__", "__rshift__", "_to_copy", "bitwise_or", "copy", "ge", "mul", "sub", "view"}),
    ("triton_per_fused_native_layer_norm_select_backward_4", {"native_layer_norm", "select_backward"}),
    ("triton_poi_fused_add_mul", {"add", "mul"}),  # a key: the counter already gone
    ("void at::native::vectorized_elementwise_kernel<4>", set()),
])
def test_fused_ops(name, ops):
    assert km.fused_ops(name) == ops


def test_op_name_of_launching_aten_op():
    assert km.op_name("aten::lerp_") == "lerp"
    assert km.op_name("aten::_to_copy") == "_to_copy"
    assert km.op_name("aten::add.Tensor") == "add"
    assert km.op_name("aten::__and__") == "__and__"


def test_pairing_by_jaccard_within_one_kind():
    removed = ["triton_poi_fused__to_copy_add_mul", "triton_red_fused_mul_sum", "triton_poi_fused_exp"]
    added = ["triton_poi_fused__to_copy_add_lerp_mul",   # 3/4 with the first: paired
             "triton_per_fused_mul_sum",                  # same ops, other kind: not paired
             "triton_poi_fused_exp_log_sigmoid"]          # 1/3 with exp: below 0.6
    assert km.pair_renamed(removed, added) == [
        ("triton_poi_fused__to_copy_add_mul", "triton_poi_fused__to_copy_add_lerp_mul", 0.75)]


def test_pairing_is_greedy_highest_first_each_key_once():
    # a-b-c vs a-b-c-d: 3/4; a-b-c vs a-b-c-d-e: 3/5; a-b vs a-b-c-d: 2/4 (below 0.6)
    removed = ["triton_poi_fused_a_b_c", "triton_poi_fused_a_b"]
    added = ["triton_poi_fused_a_b_c_d", "triton_poi_fused_a_b_c_d_e"]
    assert km.pair_renamed(removed, added) == [("triton_poi_fused_a_b_c", "triton_poi_fused_a_b_c_d", 0.75)]


def test_absorbed_needs_a_new_op():
    launch = {"lerp_kernel": {"aten::lerp_"}, "norm_kernel": {"aten::native_layer_norm"}}
    before, after = "triton_poi_fused_lerp_mul", "triton_poi_fused_lerp_mul_sub"
    hosts = [(after, km.fused_ops(after) - km.fused_ops(before))]  # only "sub" is new
    assert km.absorbed_into(launch, hosts) == {}
    # A brand-new kernel: all of its ops are new.
    hosts = [("triton_per_fused_add_native_layer_norm", km.fused_ops("triton_per_fused_add_native_layer_norm"))]
    assert km.absorbed_into(launch, hosts) == {"norm_kernel": "triton_per_fused_add_native_layer_norm"}


# ------------------------------------------------------------------------ rules


def test_kernel_status_rule():
    # same: counts equal and |Δµs| ≤ max(2 µs · count, 3% of before)
    assert kernel_status(10, 10, 1000, 1030) == "same"       # 30 ≤ max(20, 30)
    assert kernel_status(10, 10, 1000, 1031) == "changed"
    assert kernel_status(1, 1, 10, 11.9) == "same"           # 1.9 ≤ max(2, 0.3)
    assert kernel_status(1, 1, 10, 12.1) == "changed"
    assert kernel_status(10, 11, 1000, 1000) == "changed"


def test_gap_status_rule():
    assert gap_status(1, 1, 100, 121) == "changed"   # 21 > 20% of 100 and > 5
    assert gap_status(1, 1, 100, 119) == "same"      # 19 ≤ 20
    assert gap_status(1, 1, 10, 14) == "same"        # 40%, but only 4 µs
    assert gap_status(0, 2, 0, 30) == "appeared"
    assert gap_status(2, 0, 30, 0) == "disappeared"


def test_significance_twice_the_pooled_spread_then_welch():
    before = [90.0, 100.0, 110.0]                    # sample sd 10 on both sides: pooled 10
    # Δ 1 < 2 · 10: noise, no test needed
    s = significance(before, [91.0, 101.0, 111.0], 100.0, 101.0)
    assert s["spread"] == pytest.approx(10.0) and not s["significant"] and s["p"] is None
    # Δ 21 > 20, but t = 21 / (10·√(2/3)) = 2.57 < t(0.975, df 4) = 2.78: Welch says noise
    s = significance(before, [111.0, 121.0, 131.0], 100.0, 121.0)
    assert s["p"] > 0.05 and not s["significant"]
    # Δ 30: t = 3.67 > 2.78
    s = significance(before, [120.0, 130.0, 140.0], 100.0, 130.0)
    assert s["p"] < 0.05 and s["significant"]
    # without a spread (one step a side): more than 2% of the larger value
    assert significance([100.0], [103.0], 100.0, 103.0)["significant"]
    assert not significance([], [], 100.0, 101.5)["significant"]


def test_pool_recomputes_percentages_from_parts():
    rows = [sm.Sums(overlap_us=10.0, comm_us=20.0, span_us=100.0, sm_busy_us=50.0,
                    occ_weighted_us=300.0, occ_weight_us=10.0),
            sm.Sums(overlap_us=30.0, comm_us=40.0, span_us=300.0, sm_busy_us=270.0,
                    occ_weighted_us=100.0, occ_weight_us=10.0)]
    p = sm.totals(sm.mean(rows))
    assert p["comp_comm_overlap_pct"] == pytest.approx(100 * 40 / 60)   # not (50 + 75) / 2
    assert p["est_sm_efficiency_pct"] == pytest.approx(100 * 320 / 400)
    assert p["achieved_occupancy_pct"] == pytest.approx(400 / 20)
    assert p["span_us"] == 200.0


# ------------------------------------------------------------------------ the main pair


def test_metrics_per_step(doc):
    assert doc["schema"] == "speedtrace.diff/1"
    assert doc["basis"] == "per_step"
    assert doc["units"]["kernels"] == "per step per rank"
    m = doc["metrics"]
    assert m["span_us"]["before"] == pytest.approx(218.0)
    assert m["span_us"]["after"] == pytest.approx(153.0)
    assert m["span_us"]["delta"] == pytest.approx(-65.0)
    assert m["idle_us"]["before"] == pytest.approx(50.0) and m["idle_us"]["after"] == pytest.approx(0.0)
    assert m["kernel_count"]["before"] == pytest.approx(5) and m["kernel_count"]["after"] == pytest.approx(3)
    # SM efficiency: Σ busy / Σ span = (168+170+166) / (218+220+216); mean of ratios is 77.0629
    assert m["est_sm_efficiency_pct"]["before"] == pytest.approx(100 * 504 / 654, rel=1e-9)
    assert m["est_sm_efficiency_pct"]["after"] == pytest.approx(100.0)
    # occupancy: Σ occ·dur / Σ dur = (50·300 + 25·68·3) / (300 + 68·3)
    assert m["achieved_occupancy_pct"]["before"] == pytest.approx(20100 / 504, rel=1e-9)
    assert m["achieved_occupancy_pct"]["after"] == pytest.approx(18975 / 459, rel=1e-9)
    assert m["span_us"]["significant"]
    assert doc["ranks"][0]["rank"] == 0 and doc["ranks"][0]["before_steps"] == 3
    assert doc["ranks"][0]["metrics"]["span_us"]["after"] == pytest.approx(153.0)


def test_kernels_renamed_removed_absorbed(doc):
    keys = [k["key"] for k in doc["kernels"]]
    assert "triton_poi_fused__to_copy_add_mul" not in keys  # folded into the renamed entry
    # the counter change alone (add_mul_3 -> add_mul_5) is the same key
    same = kernel(doc, "triton_poi_fused_add_mul")
    assert (same["status"], same["before_count"], same["after_count"]) == ("same", 1, 1)
    assert kernel(doc, "gemm_kernel")["status"] == "same"
    renamed = kernel(doc, "triton_poi_fused__to_copy_add_lerp_mul")
    assert renamed["status"] == "changed"
    assert renamed["matched_from"] == "triton_poi_fused__to_copy_add_mul"
    assert (renamed["before_us"], renamed["after_us"]) == (pytest.approx(30.0), pytest.approx(33.0))
    assert renamed["absorbed"] == ["lerp_kernel"]
    lerp = kernel(doc, "lerp_kernel")
    assert lerp["status"] == "removed" and lerp["absorbed_into"] == renamed["key"]
    assert (lerp["before_count"], lerp["after_count"], lerp["before_us"]) == (1, 0, pytest.approx(10.0))
    old = kernel(doc, "old_kernel")
    assert old["status"] == "removed" and old["absorbed_into"] is None
    # largest |Δµs| first: lerp 10, old 8, renamed 3
    assert keys[:3] == ["lerp_kernel", "old_kernel", "triton_poi_fused__to_copy_add_lerp_mul"]


def test_gap_group_disappears(doc):
    groups = {(g["kind"], g["phase"]): g for g in doc["gaps"]}
    assert set(groups) == {("idle", "optimizer")}
    g = groups[("idle", "optimizer")]
    assert g["status"] == "disappeared"
    assert g["before"] == {"count": 1, "total_us": pytest.approx(50.0)}
    assert g["after"] == {"count": 0, "total_us": 0.0}


def test_verdict_names_the_changes(doc):
    v = doc["verdict"]
    assert not v.startswith("Warning")
    assert v.startswith("Step GPU time fell 65.0 µs (\u221229.8%)")   # 65 / 218
    assert "idle time fell 50.0 µs" in v
    assert "triton_poi_fused__to_copy_add_lerp_mul absorbed 1 eager lerp kernel" in v
    assert "old_kernel is gone" in v
    assert "Idle gaps in 'optimizer' disappeared (50.0 µs)" in v
    assert "kernel count fell from 5 to 3" in v


def test_noise_below_threshold_is_within_noise(tmp_path):
    # Same kernels; the gemm is 1 µs longer after, against a per-step spread of 2 µs.
    before = make_set(tmp_path, "b", [layout_after(g) for g in (100, 102, 98)])
    after = make_set(tmp_path, "a", [layout_after(g) for g in (101, 103, 99)])
    d = build_diff(load(before), load(after))
    assert d["metrics"]["span_us"]["delta"] == pytest.approx(1.0)
    assert d["metrics"]["span_us"]["spread"] == pytest.approx(2.0)
    assert not any(m["significant"] for m in d["metrics"].values())
    assert {k["status"] for k in d["kernels"]} == {"same"}
    assert d["verdict"] == "No change exceeds the per-step noise: within noise."


def test_different_modes_warn_first(tmp_path):
    layouts = [layout_after(g) for g in (100, 102, 98)]
    before = make_set(tmp_path, "b", layouts, run={"mode": "full", "dilation": 1.00})
    after = make_set(tmp_path, "a", layouts, run={"mode": "full", "dilation": 1.20},
                     metadata={"record_shapes": True})
    d = build_diff(load(before), load(after))
    first = d["verdict"].splitlines()[0]
    assert first.startswith("Warning: the two sides were profiled in different modes")
    assert "dilation 1.00 before, 1.20 after" in first and "record_shapes off before, on after" in first
    assert d["warnings"][0].startswith("the two sides were profiled in different modes")
    # within 0.03 and the same options: no warning
    close = make_set(tmp_path, "c", layouts, run={"mode": "full", "dilation": 1.02})
    d = build_diff(load(before), load(close))
    assert d["profiling_differences"] == [] and not d["verdict"].startswith("Warning")


def test_cuda_graphs_on_one_side_only_warn(tmp_path):
    layouts = [layout_after(g) for g in (100, 102, 98)]
    before = make_set(tmp_path, "b", layouts, run={"mode": "timing", "dilation": 1.00, "cuda_graphs": True})
    after = make_set(tmp_path, "a", layouts, run={"mode": "timing", "dilation": 1.00, "cuda_graphs": False})
    d = build_diff(load(before), load(after))
    assert d["profiling_differences"] == ["cuda_graphs on before, off after"]
    assert d["verdict"].startswith("Warning")


@pytest.mark.parametrize("host_ms, bound", [([242.0, 243.0, 241.0], True), ([200.0, 201.0, 199.0], False)])
def test_a_host_bound_side_is_named(tmp_path, host_ms, bound):
    layouts = [layout_after(g) for g in (100, 102, 98)]
    # Medians: host 242.0 (or 200.0) of 244.0 ms profiled steps; 0.95 x 244 = 231.8.
    run = {"mode": "full", "dilation": 1.07, "unprofiled_step_ms": [228.0], "unprofiled_host_ms": [198.0],
           "profiled_step_ms": [244.0, 245.0, 243.0], "profiled_host_ms": host_ms}
    before = make_set(tmp_path, "b", layouts, run={**run, "profiled_host_ms": [200.0, 201.0, 199.0]})
    after = make_set(tmp_path, "a", layouts, run=run)
    named = [w for w in build_diff(load(before), load(after))["warnings"] if "host-bound" in w]
    assert len(named) == int(bound)
    if bound:
        assert named[0].startswith(str(after)) and "returned 242.0 ms into each 244.0 ms profiled step" in named[0]


def test_whole_trace_basis_when_one_side_has_no_steps(tmp_path):
    before = make_set(tmp_path, "b", [layout_before(g) for g in (100, 102, 98)])
    after = make_set(tmp_path, "a", [layout_after(100)], annotate_steps=False)
    d = build_diff(load(before), load(after))
    assert d["basis"] == "whole_trace"
    assert d["units"]["kernels"] == "per trace per rank"
    assert any("3 steps" in w and "no step windows" in w for w in d["warnings"])
    # whole traces: before from 20 µs to the end of step 3 (2000 + 20 + 216)
    assert d["metrics"]["span_us"]["before"] == pytest.approx(2216.0)
    assert d["metrics"]["span_us"]["after"] == pytest.approx(153.0)
    gemm = kernel(d, "gemm_kernel")
    assert (gemm["before_count"], gemm["after_count"]) == (3, 1)
    assert gemm["before_us"] == pytest.approx(300.0) and gemm["after_us"] == pytest.approx(100.0)


def test_means_over_ranks(tmp_path):
    before = tmp_path / "b"
    before.mkdir()
    write_trace(before, [layout_before(g) for g in (100, 102, 98)], rank=0)
    write_trace(before, [layout_before(g) for g in (200, 202, 198)], rank=1)
    after = make_set(tmp_path, "a", [layout_after(g) for g in (101, 99, 100)])
    d = build_diff(load(before), load(after))
    m = d["metrics"]
    assert m["span_us"]["before"] == pytest.approx((218 + 318) / 2)
    # SM efficiency from summed parts: busy 168 and 268 over span 218 and 318
    assert m["est_sm_efficiency_pct"]["before"] == pytest.approx(100 * (168 + 268) / (218 + 318))
    assert [(r["rank"], r["before_steps"], r["after_steps"]) for r in d["ranks"]] == [(0, 3, 3), (1, 3, None)]
    assert d["ranks"][1]["metrics"]["span_us"]["before"] == pytest.approx(318.0)
    assert any("different ranks" in w for w in d["warnings"])


# ------------------------------------------------------------------------ rendering and CLI


def test_renderers_show_changes_and_verdict_last(doc):
    text = render(diff_sections(doc), 'text')
    assert "triton_poi_fused__to_copy_add_lerp_mul" in text
    assert "renamed from triton_poi_fused__to_copy_add_mul" in text
    assert "absorbed lerp_kernel (1, 10.0 µs)" in text
    assert "gemm_kernel" not in text.split("kernel changes")[1].split("select_backward")[0]  # same
    assert text.rstrip().splitlines()[-1].strip() == doc["verdict"].splitlines()[-1]
    md = render(diff_sections(doc), 'md')
    assert "## Kernel changes" in md and md.index("## Verdict") > md.index("## Gap groups that changed")


def test_cli_formats(pair, capsys):
    before, after = map(str, pair)
    assert main(["diff", before, after, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["basis"] == "per_step" and d["metrics"]["span_us"]["delta"] == pytest.approx(-65.0)
    assert d["metrics"]["comp_comm_overlap_pct"]["before"] is None  # no comm: null, not NaN
    assert main(["diff", before, after, "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# speedtrace diff")
    assert main(["diff", before, after]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "Step GPU time fell" in out


@pytest.mark.parametrize("bad", ["missing", "not_a_trace", "no_gpu", "min_gap"])
def test_cli_bad_input_exits_2(pair, tmp_path, capsys, bad):
    before, after = map(str, pair)
    args = ["diff", before, after]
    if bad == "missing":
        args[2] = str(tmp_path / "nope")
    elif bad == "not_a_trace":
        p = tmp_path / "x.json"
        p.write_text('{"hello": 1}')
        args[1] = str(p)
    elif bad == "no_gpu":
        t = Trace(rank=0)
        t.cpu_op("aten::mm", 0, 5)
        args[2] = str(t.write(tmp_path / "cpu-only.trace.json"))
    else:
        args += ["--min-gap-us", "abc"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = [line for line in captured.err.splitlines() if "warning" not in line]
    assert len(err) == 1 and err[0].startswith("speedtrace diff: error:")


def write_comm_trace(path: Path, comm_start: float) -> Path:
    """Three steps of a 100 µs gemm at 20 µs (all SMs) and a 50 µs NCCL kernel on another
    stream starting at ``comm_start``, launched 3 µs before it (a 1 µs call: 2 µs queued)."""
    t = Trace(rank=0)
    for j in range(3):
        base = j * STEP_US
        t.step(j + 1, base, 900)
        t.annotation("forward", base + 15, 4)
        t.cpu_op("aten::mm", base + 16, 2)
        t.launch_kernel("gemm_kernel", base + 17, base + 20, 100, grid=132)
        start = base + comm_start
        t.annotation("comm", start - 4, 3)
        t.launch_kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", start - 3, start, 50, stream=20, grid=4)
    return t.write(path / "rank-0.trace.json")


def test_comm_exposed_after(tmp_path):
    # before: NCCL at 30-80, inside the gemm (20-120): all overlapped, all on full SMs;
    # after: NCCL at 120-170, after the gemm: all exposed. Queueing: 2 µs, on full SMs both times.
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    d = build_diff(load(write_comm_trace(tmp_path / "b", 30)), load(write_comm_trace(tmp_path / "a", 120)))
    m = d["metrics"]
    assert (m["exposed_comm_us"]["before"], m["exposed_comm_us"]["after"]) == (pytest.approx(0), pytest.approx(50))
    assert (m["comp_comm_overlap_pct"]["before"], m["comp_comm_overlap_pct"]["after"]) == (pytest.approx(100), pytest.approx(0))
    assert (m["sm_contention_us"]["before"], m["sm_contention_us"]["after"]) == (pytest.approx(50), pytest.approx(0))
    assert m["comm_queue_us"]["delta"] == pytest.approx(0) and not m["comm_queue_us"]["significant"]
    assert m["comm_queue_full_sm_us"]["after"] == pytest.approx(2)
    g = next(g for g in d["gaps"] if g["kind"] == "exposed_comm")
    assert (g["phase"], g["status"], g["after"]["total_us"]) == ("comm", "appeared", pytest.approx(50))
    v = d["verdict"]
    assert "exposed communication rose 50.0 µs" in v and "comm/compute overlap fell from 100.0% to 0.0%" in v
    assert "comm on full SMs fell 50.0 µs (\u2212100.0%)" in v
    assert "Exposed communication in 'comm' appeared (50.0 µs)" in v
    assert "comm on full SMs: 50.0 → 0.0 µs" in render(diff_sections(d), 'text')


def test_compiled_graph_phases_group_without_their_hash():
    from speedtrace.analysis.metrics import phase_group

    assert phase_group("## Call CompiledFxGraph fly3c4t7rapjaw653kmost6gkacelgalnvuv2suesqjzru5clipe ##") \
        == "## Call CompiledFxGraph ##"
    assert phase_group("optimizer/adam/step") == "optimizer/adam/step"
    assert phase_group(None) is None


def test_real_record_traces_with_and_without_record_shapes():
    # The same record-233 steps traced with record_shapes on and off (data README; outside the repo).
    root = "external-traces"
    d = build_diff(load(shared_path(root, "h200-speedrun-record233")),
                   load(shared_path(root, "h200-speedrun-record233-noshapes")))
    assert d["basis"] == "per_step" and d["before"]["steps"] == [11, 12]
    assert d["verdict"].startswith("Warning: the two sides were profiled in different modes (record_shapes on")
    # metrics.md: the record has 96 dedicated select_backward kernels, 667 µs, in its two steps
    m = d["metrics"]
    assert m["select_backward_kernels"]["before"] == m["select_backward_kernels"]["after"] == 48
    assert m["select_backward_us"]["before"] * 2 == pytest.approx(667, abs=1)
    assert not m["select_backward_kernels"]["significant"]
    # the factor of four is profiler idle time, not work
    assert m["idle_us"]["significant"] and not m["compute_us"]["significant"]


def test_absorption_needs_a_shared_phase():
    # An eager add in the optimizer is not "absorbed" by a new fused add kernel in the forward:
    # fusion keeps work in the phase where it ran.
    from speedtrace.analysis.kernel_match import absorbed_into

    launch_ops = {"eager_add": {"aten::add_"}, "eager_lerp": {"aten::lerp_"}}
    hosts = [("triton_poi_fused_add_mul", frozenset({"add", "mul"})),
             ("triton_poi_fused_lerp_mul", frozenset({"lerp", "mul"}))]
    before = {"eager_add": {"optimizer"}, "eager_lerp": {"optimizer"}}
    after = {"triton_poi_fused_add_mul": {"forward"}, "triton_poi_fused_lerp_mul": {"optimizer"}}
    assert absorbed_into(launch_ops, hosts, before, after) == {"eager_lerp": "triton_poi_fused_lerp_mul"}
    # Without phase information the op names alone decide.
    assert absorbed_into(launch_ops, hosts) == {"eager_add": "triton_poi_fused_add_mul",
                                                "eager_lerp": "triton_poi_fused_lerp_mul"}
