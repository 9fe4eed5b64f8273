"""The totals, phases and kernel table of metrics.md on synthetic traces worked out by hand."""

import json
import time

import pytest
from synth import AUTOGRAD_TID, Trace

from speedtrace.analysis import metrics
from speedtrace.analysis.load import load, load_rank_file
from speedtrace.analysis.metrics import TOTAL_KEYS, device_report

BASE = 5e12
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL"


def analyse(trace, tmp_path, device=0, run=None, name="rank-0.trace.json", **kw):
    rt = load_rank_file(trace.write(tmp_path / name))
    return device_report(rt, device, run, **kw)


def overlapping_trace():
    """Several streams, two kernels overlapping on one stream, comm partly hidden, a memcpy.

    GPU (µs after BASE)                 CPU launches
      gemm   [10,20) s7  grid 132 (b=1)  occ 50   main 1, in "forward" [0,6)
      small  [15,22) s8  grid 66 (b=.5)  occ 25   main 3, in "forward"
      nccl   [18,30) s9  b arg .25       occ 10   main 7 (ends 8), in "allreduce" [6,9)
      memcpy [32,34) s7                           main 31, no annotation, no cpu op
      mm     [34,40) s7  no grid, no b            autograd 11 in aten::mm [10,13)
      add    [38,42) s7  grid 264 (b=2)  occ 100  autograd 14.5 in aten::add [14,16)
    "backward" [9,30) is annotated on the main thread only.
    """
    t = Trace()
    t.annotation("forward", 0, 6)
    t.annotation("allreduce", 6, 3)
    t.annotation("backward", 9, 21)
    t.launch_kernel("gemm", 1, 10, 10, stream=7, grid=132, occupancy=50)
    t.launch_kernel("small", 3, 15, 7, stream=8, grid=66, occupancy=25)
    t.launch_kernel(NCCL, 7, 18, 12, stream=9, blocks_per_sm=0.25, occupancy=10)
    t.memcpy(32, 2, stream=7, launch_at=31)
    t.cpu_op("aten::mm", 10, 3, tid=AUTOGRAD_TID)
    t.launch_kernel("mm", 11, 34, 6, stream=7, tid=AUTOGRAD_TID)
    t.cpu_op("aten::add", 14, 2, tid=AUTOGRAD_TID)
    t.launch_kernel("add", 14.5, 38, 4, stream=7, grid=264, occupancy=100, tid=AUTOGRAD_TID)
    return t


def test_breakdown_overlap_and_sm_use(tmp_path):
    r = analyse(overlapping_trace(), tmp_path)
    tot = r["totals"]
    assert set(TOTAL_KEYS) <= set(tot)
    assert r["num_sms"] == 132 and r["device"] == "NVIDIA H200" and r["step_source"] == "none"
    assert r["origin_ts_us"] == pytest.approx(BASE + 10, abs=1e-3)
    # span 10..42; all activity [10,30) ∪ [32,42) = 30
    assert tot["span_us"] == pytest.approx(32)
    assert tot["busy_us"] == pytest.approx(30)
    assert tot["idle_us"] == pytest.approx(2)
    # compute [10,22) ∪ [34,42) = 20; comm [18,30) = 12; overlap [18,22) = 4
    assert tot["compute_us"] == pytest.approx(20)
    assert tot["comm_us"] == pytest.approx(12)
    assert tot["memory_us"] == pytest.approx(2)
    assert tot["overlap_us"] == pytest.approx(4)
    assert tot["exposed_comm_us"] == pytest.approx(8)
    assert tot["exposed_memory_us"] == pytest.approx(2)
    assert tot["comp_comm_overlap_pct"] == pytest.approx(100 * 4 / 12)
    # the identity of metrics.md
    assert tot["compute_us"] + tot["exposed_comm_us"] + tot["exposed_memory_us"] + tot["idle_us"] \
        == pytest.approx(tot["span_us"])
    assert tot["kernel_count"] == 5 and tot["comm_kernel_count"] == 1
    # Σb: [10,15) 1 | [15,18) 1.5 | [18,20) 1.75 | [20,22) .75 | [22,30) .25 | [30,38) 0 (mm unknown)
    # | [38,42) 2 -> ∫min(1, Σb) = 5 + 3 + 2 + 1.5 + 2 + 0 + 4 = 17.5 over a span of 32
    assert tot["est_sm_efficiency_pct"] == pytest.approx(100 * 17.5 / 32)
    # compute kernels with occupancy: (50·10 + 25·7 + 100·4) / 21; nccl is not compute
    assert tot["achieved_occupancy_pct"] == pytest.approx(1075 / 21)
    # full-SM set from compute grids: [10,20) (132, then 198) ∪ [38,42) (264); comm ∩ it = [18,20)
    assert tot["sm_contention_us"] == pytest.approx(2)
    # nccl launch ends at 8, kernel starts at 18: queued 10, of which [10,18) behind gemm
    assert tot["comm_queue_us"] == pytest.approx(10)
    assert tot["comm_queue_full_sm_us"] == pytest.approx(8)
    assert tot["select_backward_kernels"] == 0 and tot["select_backward_cpu_ops"] == 0
    assert tot["unassigned_gpu_us"] is None and r["steps"] == []


def test_phases_follow_launches_to_the_main_thread(tmp_path):
    r = analyse(overlapping_trace(), tmp_path)
    phases = {p["phase"]: (p["gpu_us"], p["kernel_count"]) for p in r["phases"]}
    # mm and add are launched from the autograd thread while "backward" is open on the main one
    assert phases == {"forward": (pytest.approx(17), 2), "allreduce": (pytest.approx(12), 1),
                      "backward": (pytest.approx(10), 2), None: (pytest.approx(2), 0)}
    assert [p["phase"] for p in r["phases"]] == ["forward", "allreduce", "backward", None]


def test_gaps_of_overlapping_trace(tmp_path):
    r = analyse(overlapping_trace(), tmp_path, min_gap_us=1)
    exposed, idle = r["gaps"]  # longest first: exposed comm [22,30) 8 µs, idle [30,32) 2 µs
    assert exposed["kind"] == "exposed_comm"
    assert exposed["start_us"] == pytest.approx(12) and exposed["dur_us"] == pytest.approx(8)
    assert exposed["comm_kernels"] == [NCCL]
    assert exposed["prev_compute"] == "small" and exposed["next_compute"] == "mm"
    # attributed to mm (the compute that comes next): launched at 11, before the interval
    assert (exposed["phase"], exposed["cpu_op"], exposed["cause"]) == ("backward", "aten::mm", "dependency")
    assert idle["kind"] == "idle" and idle["start_us"] == pytest.approx(20)
    assert idle["prev_event"] == NCCL and idle["next_event"] == "Memcpy HtoD (Pageable -> Device)"
    assert (idle["phase"], idle["cpu_op"], idle["cause"]) == (None, None, "host_late")  # launched at 31 > 30
    assert r["gaps_below_threshold"] == {"count": 0, "total_us": 0.0}

    r = analyse(overlapping_trace(), tmp_path)  # default threshold 5 µs
    assert [g["kind"] for g in r["gaps"]] == ["exposed_comm"]
    assert r["gaps_below_threshold"]["count"] == 1
    assert r["gaps_below_threshold"]["total_us"] == pytest.approx(2)


def test_kernel_table(tmp_path):
    t = Trace()
    t.kernel("triton_poi_fused_add_0", 0, 2, stream=7, blocks_per_sm=0.5, occupancy=40)
    t.kernel("triton_poi_fused_add_1", 2, 6, stream=8, blocks_per_sm=1.5)
    t.kernel("gemm_v2_3", 10, 3, stream=7, grid=264)
    t.kernel(NCCL, 20, 1, stream=9)
    t.memset(30, 1, stream=7)
    rows = {k["key"]: k for k in analyse(t, tmp_path)["kernels"]}
    assert set(rows) == {"triton_poi_fused_add", "gemm_v2_3", NCCL, "Memset (Device)"}
    add = rows["triton_poi_fused_add"]
    assert (add["count"], add["class"], add["streams"]) == (2, "compute", [7, 8])
    assert add["total_us"] == pytest.approx(8) and add["mean_us"] == pytest.approx(4)
    assert add["max_us"] == pytest.approx(6)
    assert add["mean_blocks_per_sm"] == pytest.approx((0.5 * 2 + 1.5 * 6) / 8)
    assert add["mean_occupancy_pct"] == pytest.approx(40)  # only the first has it
    assert rows["gemm_v2_3"]["mean_blocks_per_sm"] == pytest.approx(2.0)  # 264 / 132
    assert rows["gemm_v2_3"]["mean_occupancy_pct"] is None
    assert rows[NCCL]["class"] == "comm" and rows["Memset (Device)"]["class"] == "memory"
    assert [k["key"] for k in analyse(t, tmp_path)["kernels"]][0] == "triton_poi_fused_add"  # by total


def test_nccl_queued_behind_full_sm_compute(tmp_path):
    """GPU (µs)                                         launch call
         big    [50,150)  grid 264                       30
         nccl1  [150,180)                                 60..65   queued 85, all behind big
         x      [170,185) grid 44, b .333333
         y      [175,185) grid 44, b .333333
         z      [175,188) grid 44, b .333333
         nccl2  [190,200)                                155..157  queued 33, [175,185) full
    x+y+z hold 132 blocks = every SM on [175,185), although their printed b sum to .999999.
    No event links: nccl1 is ready at its launch end (65), nccl2 when nccl1, ahead of it on
    stream 9, ends (180). Ready but not started: [65,150) and [180,190) = 95 µs, of which
    [65,150) and [180,185) = 90 with every SM held; waiting for inputs: [157,180) = 23.
    """
    t = Trace()
    t.launch_kernel("big", 30, 50, 100, grid=264)
    t.launch_kernel(NCCL, 60, 150, 30, stream=9, launch_dur=5)
    for name, s, d in (("x", 170, 15), ("y", 175, 10), ("z", 175, 13)):
        t.kernel(name, s, d, stream=7 if name == "x" else 8, grid=44, blocks_per_sm=0.333333)
    t.launch_kernel(NCCL, 155, 190, 10, stream=9, launch_dur=2)
    tot = analyse(t, tmp_path)["totals"]
    assert tot["comm_queue_us"] == pytest.approx(85 + 10)
    assert tot["comm_queue_full_sm_us"] == pytest.approx(85 + 5)
    assert tot["comm_wait_inputs_us"] == pytest.approx(23)
    # comm [150,180) ∪ [190,200) ∩ full [50,150) ∪ [175,185) = [175,180)
    assert tot["sm_contention_us"] == pytest.approx(5)
    # compute [50,150) ∪ [170,188); comm ∩ compute = [170,180)
    assert tot["overlap_us"] == pytest.approx(10)
    assert tot["comp_comm_overlap_pct"] == pytest.approx(25)
    # ∫min(1, Σb) uses the printed b: 100 + 5·.333333 + 10·.999999 + 3·.333333 over 150 µs
    assert tot["est_sm_efficiency_pct"] == pytest.approx(
        100 * (100 + 5 * 0.333333 + 10 * 0.999999 + 3 * 0.333333) / 150)


def test_kernels_without_occupancy_args_and_no_device_properties(tmp_path):
    t = Trace(device_properties=False)
    t.kernel("a", 0, 10, args=False)
    t.kernel("b", 10, 10)  # args, but no grid and no b
    r = analyse(t, tmp_path)
    assert r["num_sms"] is None and r["device"] is None
    tot = r["totals"]
    assert tot["busy_us"] == pytest.approx(20)
    assert tot["est_sm_efficiency_pct"] is None  # no kernel with a known b: unknown, not 0
    assert tot["achieved_occupancy_pct"] is None
    assert tot["comp_comm_overlap_pct"] is None  # no comm
    assert all(k["mean_blocks_per_sm"] is None and k["mean_occupancy_pct"] is None for k in r["kernels"])

    t.kernel("c", 20, 20, blocks_per_sm=0.5)  # known b, without numSms: the arg alone
    tot = analyse(t, tmp_path)["totals"]
    assert tot["est_sm_efficiency_pct"] == pytest.approx(100 * 0.5 * 20 / 40)
    assert tot["sm_contention_us"] == 0


def test_fractional_timestamps_near_5e12(tmp_path):
    base = 5052077122873.422
    t = Trace(base_us=base)
    t.kernel("a", 0.001, 1.056)
    t.kernel("b", 2.345, 0.864)
    t.kernel("c", 2.5, 0.833, stream=8)
    r = analyse(t, tmp_path)
    tot = r["totals"]
    # span 0.001 .. 3.333; busy 1.056 + (3.333 - 2.345)
    assert tot["span_us"] == pytest.approx(3.332, abs=1e-9)
    assert tot["busy_us"] == pytest.approx(2.044, abs=1e-9)
    assert tot["idle_us"] == pytest.approx(1.288, abs=1e-9)
    assert r["origin_ts_us"] == pytest.approx(base + 0.001, abs=1e-6)


def test_several_ranks_and_devices(tmp_path):
    r0 = Trace(rank=0, world_size=2, devices={0: 132, 1: 114})
    r0.kernel("k", 0, 10, device=0, grid=132)
    r0.kernel("k", 0, 4, device=1, grid=114)
    r0.kernel("k", 6, 4, device=1, grid=57)
    r1 = Trace(rank=1, world_size=2)
    r1.kernel("k", 3, 5, device=0, grid=66)
    r0.write(tmp_path / "rank-0.trace.json")
    r1.write(tmp_path / "rank-1.trace.json")
    got = {(x["rank"], x["device_id"]): x for x in metrics.totals(load(tmp_path))}
    assert set(got) == {(0, 0), (0, 1), (1, 0)}
    assert got[(0, 0)]["busy_us"] == pytest.approx(10)
    assert got[(0, 0)]["est_sm_efficiency_pct"] == pytest.approx(100)
    # device 1 has 114 SMs: b = 1 on [0,4), .5 on [6,10): (4 + 2) / 10
    assert got[(0, 1)]["busy_us"] == pytest.approx(8) and got[(0, 1)]["idle_us"] == pytest.approx(2)
    assert got[(0, 1)]["est_sm_efficiency_pct"] == pytest.approx(60)
    assert got[(1, 0)]["est_sm_efficiency_pct"] == pytest.approx(50)
    assert len(metrics.totals(load(tmp_path), rank=1)) == 1


def test_api_records_and_json(tmp_path):
    overlapping_trace().write(tmp_path / "rank-0.trace.json")
    ts = load(tmp_path)
    assert [g["kind"] for g in metrics.gaps(ts, min_gap_us=1)] == ["exposed_comm", "idle"]
    assert metrics.gaps(ts, min_gap_us=1, top=1)[0]["rank"] == 0
    assert {p["phase"] for p in metrics.phases(ts)} == {"forward", "allreduce", "backward", None}
    assert len(metrics.kernels(ts)) == 6 and metrics.steps(ts) == []
    assert metrics.totals(ts).to_pandas().shape[0] == 1
    json.dumps(device_report(ts.ranks[0], 0, None), allow_nan=False)  # plain JSON values


def test_ten_thousand_kernels_analyse_fast(tmp_path):
    t = Trace()
    t.step(1, 0, 30_000)
    for i in range(10_000):
        t.cpu_op("aten::mm", 2 * i, 1.5)
        t.launch_kernel(f"triton_poi_fused_add_{i % 50}", 2 * i + 0.2, 100 + 2.5 * i, 2.0,
                        stream=7 + i % 3, grid=66 + i % 200, occupancy=30)
    rt = load_rank_file(t.write(tmp_path / "big.json"))
    start = time.perf_counter()
    r = device_report(rt, 0, None)
    assert time.perf_counter() - start < 1.0
    assert r["totals"]["kernel_count"] == 10_000 and len(r["steps"]) == 1


def table(events, names):
    """An EventTable straight from (cat, name, ts, dur, pid, tid, grid) tuples, no file."""
    import numpy as np

    from speedtrace.analysis.events import COLUMNS, EventTable

    missing = {"i": -1, "u": 0, "f": np.nan}
    cols = {k: np.full(len(events), missing[np.dtype(t).kind], dtype=t) for k, t in COLUMNS.items()}
    for i, (cat, name, ts, dur, pid, tid, grid) in enumerate(events):
        cols["cat"][i], cols["name"][i], cols["ts"][i], cols["dur"][i] = cat, name, ts, dur
        cols["pid"][i], cols["tid"][i], cols["grid_blocks"][i] = pid, tid, grid
    return EventTable(**cols, names=names)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), st.integers(0, 60), st.integers(0, 20),
                          st.integers(7, 9), st.sampled_from([-1, 33, 66, 132, 264])),
                min_size=1, max_size=25))
def test_breakdown_identity_on_random_traces(spec):
    """compute + exposed_comm + exposed_memory + idle = span, and the gaps add up to idle_us,
    for random kernels (0: compute, 1: comm), memcpys (2) and memsets (3) on three streams."""
    from speedtrace.analysis.events import Cat, DeviceInfo, RankTrace

    cats = {0: Cat.KERNEL, 1: Cat.KERNEL, 2: Cat.GPU_MEMCPY, 3: Cat.GPU_MEMSET}
    names = ["compute", NCCL, "Memcpy", "Memset"]
    ev = table([(cats[c], c, float(s), float(d), 0, stream, g) for c, s, d, stream, g in spec], names)
    rt = RankTrace(path="random", rank=0, events=ev, origin_ts_us=BASE, devices={0: DeviceInfo(0, "x", 132)})
    r = device_report(rt, 0, None, min_gap_us=0.0)
    tot = r["totals"]
    assert tot["compute_us"] + tot["exposed_comm_us"] + tot["exposed_memory_us"] + tot["idle_us"] \
        == pytest.approx(tot["span_us"])
    idle_gaps = sum(g["dur_us"] for g in r["gaps"] if g["kind"] == "idle")
    assert idle_gaps == pytest.approx(tot["idle_us"])
    assert sum(g["dur_us"] for g in r["gaps"] if g["kind"] == "exposed_comm") == pytest.approx(tot["exposed_comm_us"])
    assert 0 <= tot["sm_contention_us"] <= tot["overlap_us"] + 1e-9
    assert tot["est_sm_efficiency_pct"] is None or 0 <= tot["est_sm_efficiency_pct"] <= 100 + 1e-9
