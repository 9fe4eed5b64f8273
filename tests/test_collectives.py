"""Per-collective rows and the comm queue split (metrics.md "Collectives", "Comm queueing")."""

import numpy as np
import pytest
from conftest import shared_path
from synth import AUTOGRAD_TID, MAIN_TID, PID, Trace

from speedtrace.analysis import collectives as C
from speedtrace.analysis.comm_queue import comm_queue_totals, comm_readiness
from speedtrace.analysis.load import load, load_rank_file
from speedtrace.analysis.timeline import device_timeline
from speedtrace.samples import sample_path

COMM = 20


def call(t, name, ts, dur, external_id, *, tid=MAIN_TID, cat="cuda_runtime", correlation=None, **args):
    """A runtime call or CPU op carrying an External id (synth's adders write 1)."""
    a = {"External id": external_id, **args}
    if correlation is not None:
        a["correlation"] = correlation
    t._x(cat, name, ts, dur, PID, tid, a)


def collective(t, *, ext, op_at, kernel, start, dur, args, tid=MAIN_TID, record_at=None, wait_at=None,
               launch_at, record_call="cudaEventRecord", nccl_range=None):
    """record_param_comms [op_at, op_at + 40) with its event record, stream wait and launch."""
    call(t, "record_param_comms", op_at, 40, ext, tid=tid, cat="cpu_op", **args)
    if record_at is not None:
        call(t, record_call, record_at, 1, ext, tid=tid, correlation=t.next_correlation())
    if wait_at is not None:
        call(t, "cudaStreamWaitEvent", wait_at, 1, ext, tid=tid, correlation=t.next_correlation())
    if nccl_range is not None:
        t._x("user_annotation", nccl_range, op_at + 5, 30, PID, tid, {"External id": ext + 1})
    c = t.next_correlation()
    call(t, "cudaLaunchKernel", launch_at, 2, ext, tid=tid, correlation=c)
    t.kernel(kernel, start, dur, stream=COMM, correlation=c, grid=24, block=(544, 1, 1))


ALLREDUCE = {"Collective name": "allreduce", "dtype": "Float", "In msg nelems": 1000, "Out msg nelems": 1000,
             "Group size": 2, "Process Group Name": "0", "Process Group Ranks": "[0, 1]"}
REDUCE_SCATTER = {"Collective name": "_reduce_scatter_base", "dtype": "BFloat16", "In msg nelems": 800,
                  "Out msg nelems": 400, "Group size": 2, "Process Group Name": "0",
                  "Process Group Ranks": "[0, 1]"}


def two_collectives() -> Trace:
    """Device 0 (132 SMs), compute on stream 7, NCCL on stream 20; times in µs.

    main thread: ProfilerStep#1 [0,1000) > train_step [0,1000) > optimizer [10,200)
      A  launched 20 (ends 21)          stream 7 [100,300) grid 132 (every SM)
      all_reduce record_param_comms [30,70): cudaEventRecord 32, cudaStreamWaitEvent 34,
                 nccl:all_reduce [35,65), launch 40 (ends 42) -> kernel [310,410)
      B  launched 70                    stream 7 [300,305) grid 132 (every SM)
      C  launched 80                    stream 7 [350,380) grid 10
    autograd thread: evaluate_function: MmBackward0 [400,500)
      D  launched 405                   stream 7 [420,440) grid 10
      reduce_scatter record_param_comms [410,450): cudaEventRecordWithFlags 412, wait 414,
                 launch 420 (ends 422) -> kernel [445,495)
    a pre-window all_gather kernel [50,60) on stream 20 whose launch is not in the trace.

    all_reduce: ready = end of the stream-7 work queued before the record at 32 (A: 300), so it
      waited 300 - 42 = 258 for inputs and 310 - 300 = 10 for the GPU, 5 of them (B) while
      compute held every SM; C overlaps it for 30 of its 100 µs.
    reduce_scatter: the autograd thread's current stream is 7 (D); the work queued there before
      the record at 412 ends at 440 (D); the all_reduce ahead of it on stream 20 ends at 410;
      ready = max(422, 440, 410) = 440: 18 for inputs, 5 for the GPU, none on full SMs.
    """
    t = Trace()
    t.step(1, 0, 1000)
    t.annotation("train_step", 0, 1000)
    t.annotation("optimizer", 10, 190)
    t.launch_kernel("A", 20, 100, 200, grid=132)
    collective(t, ext=500, op_at=30, kernel="ncclDevKernel_AllReduce_Sum_f32_RING_LL", start=310, dur=100,
               args=ALLREDUCE, record_at=32, wait_at=34, launch_at=40, nccl_range="nccl:all_reduce")
    t.launch_kernel("B", 70, 300, 5, grid=132)
    t.launch_kernel("C", 80, 350, 30, grid=10)
    t.cpu_op("autograd::engine::evaluate_function: MmBackward0", 400, 100, tid=AUTOGRAD_TID)
    t.launch_kernel("D", 405, 420, 20, grid=10, tid=AUTOGRAD_TID)
    collective(t, ext=600, op_at=410, kernel="ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL", start=445,
               dur=50, args=REDUCE_SCATTER, tid=AUTOGRAD_TID, record_at=412, wait_at=414, launch_at=420,
               record_call="cudaEventRecordWithFlags", nccl_range="nccl:_reduce_scatter_base")
    t.kernel("ncclDevKernel_AllGather_RING_LL", 50, 10, stream=COMM, correlation=99_999, grid=24)
    return t


def timeline(trace, tmp_path, name="rank-0.trace.json.gz"):
    return device_timeline(load_rank_file(trace.write(tmp_path / name)), 0)


def test_rows_of_a_hand_built_trace(tmp_path):
    tl = timeline(two_collectives(), tmp_path)
    pre, ar, rs = C.collectives(tl)
    assert list(ar) == list(C.ROW_KEYS)
    assert ar["kind"] == "all_reduce" and rs["kind"] == "reduce_scatter" and pre["kind"] == "all_gather"
    assert ar["step"] == rs["step"] == 1 and ar["stream"] == COMM
    # the own nccl:* range is not the phase; the autograd engine's launch is backward even though
    # train_step is open on the main thread
    assert ar["launch_phase"] == "optimizer" and rs["launch_phase"] == "backward"
    # start from the step's first GPU start (A at 100)
    assert ar["start_us"] == pytest.approx(210) and rs["start_us"] == pytest.approx(345)
    assert ar["dur_us"] == pytest.approx(100) and ar["exposed_us"] == pytest.approx(70)
    assert rs["exposed_us"] == pytest.approx(50)
    assert ar["queue_us"] == pytest.approx(268)
    assert ar["wait_inputs_us"] == pytest.approx(258) and ar["wait_sms_us"] == pytest.approx(10)
    assert ar["wait_sms_full_sm_us"] == pytest.approx(5)
    assert rs["queue_us"] == pytest.approx(23)
    assert rs["wait_inputs_us"] == pytest.approx(18) and rs["wait_sms_us"] == pytest.approx(5)
    assert rs["wait_sms_full_sm_us"] == pytest.approx(0)
    # record_param_comms: 1000 floats on 2 ranks in 100 µs = 4000 B / 100 µs = 0.04 GB/s; an
    # all-reduce's bus factor 2(n-1)/n = 1. The reduce-scatter moves its 800-element bf16 input:
    # 1600 B / 50 µs = 0.032 GB/s, bus factor (n-1)/n = 1/2.
    assert (ar["dtype"], ar["in_nelems"], ar["out_nelems"], ar["group_size"], ar["process_group"]) == \
        ("Float", 1000, 1000, 2, "0")
    assert ar["bytes"] == 4000 and ar["algbw_gbps"] == pytest.approx(0.04) and ar["busbw_gbps"] == pytest.approx(0.04)
    assert rs["bytes"] == 1600 and rs["algbw_gbps"] == pytest.approx(0.032)
    assert rs["busbw_gbps"] == pytest.approx(0.016)
    # launched before the window: listed, with no step, phase or queue
    assert pre["step"] is None and pre["launch_phase"] is None and pre["start_us"] is None
    assert pre["queue_us"] is None and pre["wait_inputs_us"] is None and pre["wait_sms_us"] is None
    assert pre["dur_us"] == pytest.approx(10) and pre["exposed_us"] == pytest.approx(10)
    assert pre["bytes"] is None and pre["algbw_gbps"] is None
    assert comm_readiness(tl).warnings == []


def test_queue_totals_are_unions_of_the_split(tmp_path):
    tl = timeline(two_collectives(), tmp_path)
    totals = comm_queue_totals(tl, np.ones(len(tl.rows), bool))
    # [ready, start): [300,310) and [440,445); inputs: [42,300) and [422,440)
    assert totals["comm_queue_us"] == pytest.approx(15)
    assert totals["comm_queue_full_sm_us"] == pytest.approx(5)
    assert totals["comm_wait_inputs_us"] == pytest.approx(276)
    only_first = np.zeros(len(tl.rows), bool)
    only_first[np.flatnonzero(tl.is_comm)[1]] = True
    assert comm_queue_totals(tl, only_first) == pytest.approx(
        {"comm_queue_us": 10, "comm_queue_full_sm_us": 5, "comm_wait_inputs_us": 258})


def test_without_event_links_ready_is_the_launch_end_and_a_warning_says_so(tmp_path):
    t = Trace()
    t.step(1, 0, 1000)
    t.launch_kernel("A", 20, 100, 200, grid=132)
    collective(t, ext=500, op_at=30, kernel="ncclDevKernel_AllReduce_Sum_f32_RING_LL", start=310, dur=100,
               args=ALLREDUCE, launch_at=40)
    tl = timeline(t, tmp_path)
    (row,) = C.collectives(tl)
    assert row["wait_inputs_us"] == pytest.approx(0) and row["wait_sms_us"] == pytest.approx(268)
    (warning,) = comm_readiness(tl).warnings
    assert "could not be split" in warning and "rank 0" in warning


def test_kineto_wait_events_name_the_producer_stream(tmp_path):
    """A cuda_sync "Stream Wait Event" on stream 20 says the event was recorded on stream 9 (by
    the record call's correlation): the thread's latest launch went to stream 7, whose work ends
    at 300, but the collective waits for E on stream 9, which ends at 500."""
    t = Trace()
    t.step(1, 0, 1000)
    t.launch_kernel("E", 10, 100, 400, stream=9, grid=10)
    t.launch_kernel("A", 20, 100, 200, grid=10)
    rec, wait = t.next_correlation(), t.next_correlation()
    call(t, "record_param_comms", 30, 40, 500, cat="cpu_op", **ALLREDUCE)
    call(t, "cudaEventRecord", 32, 1, 500, correlation=rec)
    call(t, "cudaStreamWaitEvent", 34, 1, 500, correlation=wait)
    t._x("cuda_sync", "Stream Wait Event", 300, 0, 0, COMM,
         {"device": 0, "stream": COMM, "correlation": wait, "wait_on_stream": 9,
          "wait_on_cuda_event_record_corr_id": rec})
    c = t.next_correlation()
    call(t, "cudaLaunchKernel", 40, 2, 500, correlation=c)
    t.kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 503, 50, stream=COMM, correlation=c, grid=24)
    (row,) = C.collectives(timeline(t, tmp_path))
    assert row["wait_inputs_us"] == pytest.approx(500 - 42) and row["wait_sms_us"] == pytest.approx(3)


@pytest.mark.parametrize("name, kind", [
    ("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "reduce_scatter"),
    ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "all_gather"),
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)", "all_reduce"),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8", "send_recv"),
    ("ncclKernel_Broadcast_RING_LL_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", "broadcast"),
    ("ncclDevKernel_Reduce_Sum_f32_RING_LL", "reduce"),
    ("ncclDevKernel_AllToAll_RING_LL", "all_to_all"),
    ("_reduce_scatter_base", "reduce_scatter"), ("_allgather_base", "all_gather"),
    ("allreduce", "all_reduce"), ("all_to_all", "all_to_all"), ("send", "send_recv"),
    ("ncclDevKernel_Generic_1", None), (None, None),
])
def test_kind_of_names(name, kind):
    assert C.kind_of(name) == kind


def test_bus_factors_follow_nccl_tests():
    assert C.bus_factor("all_reduce", 8) == pytest.approx(14 / 8)
    assert C.bus_factor("all_gather", 8) == C.bus_factor("reduce_scatter", 8) == pytest.approx(7 / 8)
    assert C.bus_factor("broadcast", 8) == C.bus_factor("send_recv", None) == 1.0
    assert C.bus_factor("all_reduce", None) is None and C.bus_factor("other", 8) is None
    assert C.message_bytes({"dtype": "BFloat16", "in_nelems": 8, "out_nelems": 64}) == 128
    assert C.message_bytes({"dtype": "Mystery", "in_nelems": 8}) is None


def test_phase_summary_adds_up(tmp_path):
    rows = C.collectives(timeline(two_collectives(), tmp_path))
    by = {p["launch_phase"]: p for p in C.phase_summary(rows)}
    assert by["optimizer"]["count"] == 1 and by["optimizer"]["bytes"] == 4000
    assert by["optimizer"]["exposed_us"] == pytest.approx(70)
    assert by["backward"]["wait_inputs_us"] == pytest.approx(18)
    assert by[None]["count"] == 1 and by[None]["dur_us"] == pytest.approx(10)
    assert [r["exposed_us"] for r in C.top_by_exposed(rows, 2)] == pytest.approx([70, 50])


# ----------------------------------------------------------------------------- real traces


def check_bounded(trace_set):
    """Each queue total is at most span × comm streams; per row the split adds up."""
    for rt in trace_set.ranks:
        for device in rt.gpu_devices():
            tl = device_timeline(rt, device, trace_set.run)
            sel = np.ones(len(tl.rows), bool)
            totals = comm_queue_totals(tl, sel)
            span = float(tl.end.max() - tl.start.min())
            streams = len(np.unique(comm_readiness(tl).stream))
            assert streams >= 1
            for key, value in totals.items():
                assert 0 <= value <= span * streams + 1e-6, (rt.rank, key)
            assert totals["comm_queue_full_sm_us"] <= totals["comm_queue_us"] + 1e-6
            for row in C.collectives(tl):
                if row["queue_us"] is not None:
                    assert row["wait_inputs_us"] >= 0 and row["wait_sms_us"] >= 0
                    assert row["wait_inputs_us"] + row["wait_sms_us"] == pytest.approx(row["queue_us"])
                    assert row["wait_sms_full_sm_us"] <= row["wait_sms_us"] + 1e-6


def test_eight_rank_sample_queue_is_split_and_bounded():
    ts = load(str(sample_path("h100x8-normuon")))
    check_bounded(ts)
    rt = ts.ranks[3]
    tl = device_timeline(rt, rt.gpu_devices()[0])
    rows = C.collectives(tl)
    launched = [r for r in rows if r["queue_us"] is not None]
    # The old definition (launch end to start, summed) exceeds the span on this rank; most of
    # it is waiting for inputs, which the split now says.
    old = sum(r["queue_us"] for r in launched)
    span = float(tl.end.max() - tl.start.min())
    assert old > span
    assert sum(r["wait_inputs_us"] for r in launched) > 0.95 * old
    ready = comm_readiness(tl)
    assert ready.warnings == [] and ready.linked[~np.isnan(ready.launch_end)].all()
    # 56 collectives launched in the window (record_param_comms), the rest before it
    assert len(launched) == 56 and all(r["bytes"] for r in launched)
    assert {r["launch_phase"] for r in launched} == {
        "backward", "Optimizer.step#NorMuon.step", "Optimizer.step#DistAdam.step"}
    assert {r["kind"] for r in rows} == {"reduce_scatter", "all_gather"}


def test_nccl_a100_sample_queue_is_split_and_bounded():
    ts = load(str(sample_path("nccl-a100")))
    check_bounded(ts)
    tl = device_timeline(ts.ranks[0], 0)
    rows = C.collectives(tl)
    # older Kineto copies the collective's parameters onto the kernel
    assert all(r["bytes"] and r["group_size"] == 2 for r in rows)
    assert {r["kind"] for r in rows} == {"all_reduce", "broadcast"}
    assert comm_readiness(tl).linked.all() and comm_readiness(tl).warnings == []


def test_hta_sampled_queue_is_bounded_and_warns_without_links():
    ts = load(str(shared_path("external-traces", "hta-sampled-2rank")))
    check_bounded(ts)
    for rt in ts.ranks:
        tl = device_timeline(rt, rt.gpu_devices()[0])
        assert any("could not be split" in w for w in comm_readiness(tl).warnings)


def test_odd_collective_args_give_nulls_not_errors(tmp_path):
    t = Trace()
    t.step(1, 0, 1000)
    odd = {"Collective name": 5, "dtype": 7, "In msg nelems": "many", "Out msg nelems": -3,
           "Group size": True, "Process Group Name": ["x"], "Process Group Ranks": {"a": 1}}
    collective(t, ext=500, op_at=30, kernel="ncclDevKernel_AllReduce_Sum_f32_RING_LL", start=310, dur=100,
               args=odd, launch_at=40)
    (row,) = C.collectives(timeline(t, tmp_path))
    assert row["kind"] == "all_reduce"
    assert row["dtype"] is None and row["in_nelems"] is None and row["out_nelems"] is None
    assert row["group_size"] is None and row["process_group"] is None
    assert row["bytes"] is None and row["busbw_gbps"] is None


def two_step_set(path, second_phase):
    """Steps 1 [0,1000) and 2 [1000,2000), each with an all-reduce (4000 B, 100 µs, nothing
    overlapping it) launched inside an annotation: ``optimizer`` in step 1, ``second_phase`` in 2."""
    t = Trace()
    for n, t0, phase in ((1, 0, "optimizer"), (2, 1000, second_phase)):
        t.step(n, t0, 1000)
        t.annotation(phase, t0 + 10, 100)
        collective(t, ext=500 + n, op_at=t0 + 30, kernel="ncclDevKernel_AllReduce_Sum_f32_RING_LL",
                   start=t0 + 300, dur=100, args=ALLREDUCE, launch_at=t0 + 40)
    path.mkdir()
    t.write(path / "rank-0.trace.json.gz")
    return load(str(path))


def test_diff_compares_collectives_and_names_phase_changes(tmp_path):
    from speedtrace.analysis.diff import build_diff
    from speedtrace.analysis.diff_sections import diff_sections
    from speedtrace.analysis.render import render_text

    doc = build_diff(two_step_set(tmp_path / "before", "optimizer"), two_step_set(tmp_path / "after", "grad_sync"))
    c = doc["collectives"]
    assert doc["units"]["collectives"] == "per step per rank"
    (kind,) = c["kinds"]
    assert kind["kind"] == "all_reduce" and kind["before_count"] == kind["after_count"] == 1
    assert kind["before_bytes"] == kind["after_bytes"] == pytest.approx(4000)
    assert kind["before_exposed_us"] == kind["after_exposed_us"] == pytest.approx(100)
    assert c["before"]["count"] == 1 and c["after"]["us"] == pytest.approx(100)
    assert c["phase_changes"] == [{"kind": "all_reduce", "step": 2, "before_phase": "optimizer",
                                   "after_phase": "grad_sync", "count": 1}]
    text = render_text(diff_sections(doc))
    assert "launch phase changed:" in text and "grad_sync" in text
