"""select_backward classification and gap attribution (phase, cpu_op, cause)."""

import pytest
from synth import AUTOGRAD_TID, Trace

from speedtrace.analysis.load import load_rank_file
from speedtrace.analysis.metrics import device_report
from speedtrace.analysis.select_backward import DEDICATED, FUSED, NONE, kind_of_name


def report(trace, tmp_path, **kw):
    return device_report(load_rank_file(trace.write(tmp_path / "rank-0.trace.json.gz")), 0, None, **kw)


@pytest.mark.parametrize("name, kind", [
    ("triton_poi_fused_mul_select_backward_3", FUSED),            # mul is real work
    ("triton_poi_fused_select_backward_zeros_7", DEDICATED),      # zeros only moves data
    ("triton_poi_fused_index_select_backward_2", NONE),           # index_select_backward
    ("triton_poi_fused_masked_select_backward_1", NONE),
    # `add` is in metrics.md's data-movement list: the record trace's 96 dedicated kernels are
    # 48 of this family and 48 of select_backward_squeeze_transpose
    ("triton_poi_fused__to_copy_add_select_backward_55", DEDICATED),
    ("triton_poi_fused_select_backward_squeeze_transpose_40", DEDICATED),
    ("triton_per_fused__unsafe_view_flex_attention_backward_mul_select_select_backward_sigmoid_"
     "sigmoid_backward_sum_transpose_view_13", FUSED),
    ("aten::select_backward", DEDICATED),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", NONE),
])
def test_select_backward_names(name, kind):
    assert kind_of_name(name) == kind


def test_eager_and_inductor_select_backward(tmp_path):
    """Eager: aten::select_backward [10,30) on the main thread, with
         aten::zeros [11,18) > aten::zero_ [12,17) > aten::fill_ [13,16): fill kernel launched at 14
         aten::copy_ [19,25): a memset launched at 20 and a copy kernel launched at 22
       and a fill launched at 51 outside it. Inductor kernels, each launched inside a cpu_op of
       its own name (as Inductor's launcher appears), plus a kernel of a neutral name launched
       inside the Inductor op triton_poi_fused_select_backward_view_9.
    """
    t = Trace()
    t.cpu_op("aten::select_backward", 10, 20)
    t.cpu_op("aten::zeros", 11, 7)
    t.cpu_op("aten::zero_", 12, 5)
    t.cpu_op("aten::fill_", 13, 3)
    t.launch_kernel("fill_kernel", 14, 40, 2)
    t.cpu_op("aten::copy_", 19, 6)
    t.memset(42, 1, launch_at=20)
    t.launch_kernel("copy_kernel", 22, 43, 3)
    t.cpu_op("aten::fill_", 50, 5)
    t.launch_kernel("fill_kernel", 51, 60, 2)
    inductor = [("triton_poi_fused_mul_select_backward_3", 4),           # fused
                ("triton_poi_fused_select_backward_zeros_7", 3),         # dedicated
                ("triton_poi_fused_index_select_backward_2", 5),         # neither
                ("triton_poi_fused__to_copy_add_select_backward_55", 2)]  # dedicated
    at = 100
    for name, dur in inductor:
        t.cpu_op(name, at, 2)
        t.launch_kernel(name, at + 0.5, at + 10, dur)
        at += 20
    t.cpu_op("triton_poi_fused_select_backward_view_9", at, 2)
    t.launch_kernel("neutral_kernel", at + 0.5, at + 10, 1.5)  # dedicated by its op's name
    tot = report(t, tmp_path)["totals"]
    # dedicated: fill 2 + memset 1 + copy 3 + zeros_7 3 + _55 2 + neutral 1.5
    assert tot["select_backward_kernels"] == 6
    assert tot["select_backward_us"] == pytest.approx(12.5)
    assert tot["select_backward_fused_kernels"] == 1
    assert tot["select_backward_cpu_ops"] == 1


def gap_trace():
    """Main thread: ProfilerStep#1 [0,100) ⊃ "forward" [0,5), "backward" [5,9), "optimizer" [9,100).

    kernel  launch (thread, in)                      GPU        gap before it
      A     1 main                                   [10,20)
      B     25 main, in aten::add_ [24,27)           [30,40)    [20,30) host_late (25 > 20),
                                                                despite cudaDeviceSynchronize [21,23)
      C     2 main                                   [52,60)    [40,52) sync: cuda_sync [42,44)
      D     3 main                                   [69,80)    [60,69) sync: cudaStreamWaitEvent [65,66)
      G     6 autograd, in MmBackward0 [5.5,7)       [86,95)    [80,86) dependency
      F     4.5 main                                 [97,98)    [95,97) 2 µs: below threshold
    """
    t = Trace()
    t.step(1, 0, 100)
    t.annotation("forward", 0, 5)
    t.annotation("backward", 5, 4)
    t.annotation("optimizer", 9, 91)
    t.launch_kernel("A", 1, 10, 10)
    t.cpu_op("aten::add_", 24, 3)
    t.launch_kernel("B", 25, 30, 10)
    t.runtime("cudaDeviceSynchronize", 21, 2)
    t.launch_kernel("C", 2, 52, 8)
    t.cuda_sync(42, 2)
    t.launch_kernel("D", 3, 69, 11, launch_dur=0.5)
    t.runtime("cudaStreamWaitEvent", 65, 1)
    t.cpu_op("MmBackward0", 5.5, 1.5, tid=AUTOGRAD_TID)
    t.launch_kernel("G", 6, 86, 9, tid=AUTOGRAD_TID, launch_dur=0.5)
    t.launch_kernel("F", 4.5, 97, 1, launch_dur=0.25)
    return t


def test_gap_attribution(tmp_path):
    r = report(gap_trace(), tmp_path)
    got = [(g["kind"], g["start_us"], g["dur_us"], g["step"], g["phase"], g["cpu_op"], g["cause"],
            g["prev_event"], g["next_event"]) for g in r["gaps"]]
    # start_us relative to A's start (10); longest first
    assert got == [
        ("idle", 30.0, 12.0, 1, "forward", None, "sync", "B", "C"),
        ("idle", 10.0, 10.0, 1, "optimizer", "aten::add_", "host_late", "A", "B"),
        ("idle", 50.0, 9.0, 1, "forward", None, "sync", "C", "D"),
        ("idle", 70.0, 6.0, 1, "backward", "MmBackward0", "dependency", "D", "G"),
    ]
    assert r["gaps_below_threshold"]["count"] == 1
    assert r["gaps_below_threshold"]["total_us"] == pytest.approx(2)
    assert r["totals"]["idle_us"] == pytest.approx(12 + 10 + 9 + 6 + 2)
    assert len(report(gap_trace(), tmp_path, top=2)["gaps"]) == 2
    assert report(gap_trace(), tmp_path, min_gap_us=10)["gaps_below_threshold"]["count"] == 3
