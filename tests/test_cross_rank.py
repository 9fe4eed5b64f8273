"""Collectives matched across ranks: skew, waits, stragglers (metrics.md "Across ranks")."""

import gzip
import json
import shutil
import statistics

import msgspec
import pytest
from synth import Trace
from test_collectives import ALLREDUCE, REDUCE_SCATTER, collective

from speedtrace.analysis.collectives import collective_table
from speedtrace.analysis.cross_rank import _group_ranks, cross_rank
from speedtrace.analysis.load import load
from speedtrace.analysis.timeline import device_timeline
from speedtrace.samples import sample_path

AR = "ncclDevKernel_AllReduce_Sum_f32_RING_LL"
RS = "ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL"
AG = "ncclDevKernel_AllGather_RING_LL"
ALLGATHER = {**ALLREDUCE, "Collective name": "_allgather_base", "In msg nelems": 10, "Out msg nelems": 20}


def rank_trace(rank, starts, *, extra=False, group="[0, 1]"):
    """Step 1 [0,1000), optimizer [10,990); aten::mm [5,30); two all-reduces of one size and a
    reduce-scatter, launched at 40, 100 and 160, their kernels starting at ``starts`` (100, 100
    and 50 µs long); a pre-window all-gather kernel; ``extra``: an all-gather on this rank only."""
    t = Trace(rank=rank, world_size=2)
    t.step(1, 0, 1000)
    t.annotation("optimizer", 10, 980)
    t.cpu_op("aten::mm", 5, 25)
    ar0, ar1, rs = starts
    allreduce = {**ALLREDUCE, "Process Group Ranks": group}
    reduce_scatter = {**REDUCE_SCATTER, "Process Group Ranks": group}
    collective(t, ext=500, op_at=35, kernel=AR, start=ar0, dur=100, args=allreduce, launch_at=40)
    collective(t, ext=510, op_at=95, kernel=AR, start=ar1, dur=100, args=allreduce, launch_at=100)
    collective(t, ext=520, op_at=155, kernel=RS, start=rs, dur=50, args=reduce_scatter, launch_at=160)
    if extra:
        collective(t, ext=530, op_at=215, kernel=AG, start=900, dur=10, args=ALLGATHER, launch_at=220)
    t.kernel(AG, 1, 2, stream=20, correlation=99_999, grid=24)
    return t


def timelines(paths):
    """The collective table of every rank of the trace set at ``paths``."""
    ts = load(str(paths))
    return [collective_table(device_timeline(rt, rt.gpu_devices()[0], ts.run)) for rt in ts.ranks]


def test_two_ranks_by_hand(tmp_path):
    """Rank 1 starts the first all-reduce 60 µs after rank 0 (rank 0 waits min(100, 60) = 60),
    the second 20 µs before (rank 1 waits 20), the reduce-scatter 80 µs after (rank 0 waits
    min(50, 80) = 50: its kernel had ended). Rank 1 caused 110 µs of waiting, rank 0 20."""
    rank_trace(0, (310, 500, 700)).write(tmp_path / "rank-0.trace.json.gz")
    rank_trace(1, (370, 480, 780), extra=True).write(tmp_path / "rank-1.trace.json.gz")
    out = cross_rank(timelines(tmp_path))
    assert out["matched"] == 3
    first, second, third = out["instances"]
    assert (first["kind"], first["step"], first["process_group"], first["seq"]) == ("all_reduce", 1, "0", 0)
    assert first["ranks"] == [0, 1] and first["bytes"] == 4000
    assert first["start_skew_us"] == pytest.approx(60) and first["last_rank"] == 1
    assert first["wait_us"] == pytest.approx([60, 0]) and first["late_us"] == pytest.approx([0, 60])
    assert second["seq"] == 1 and second["last_rank"] == 0 and second["wait_us"] == pytest.approx([0, 20])
    assert third["kind"] == "reduce_scatter" and third["wait_us"] == pytest.approx([50, 0])
    assert out["stragglers"] == [{"rank": 1, "last_count": 2, "wait_caused_us": pytest.approx(110)},
                                 {"rank": 0, "last_count": 1, "wait_caused_us": pytest.approx(20)}]
    # the pre-window kernel of each rank, and the all-gather rank 0 never ran
    assert out["unmatched"] == {"count": 3, "no_step": 2, "partial": 1}
    assert any("could not be matched" in w for w in out["warnings"])
    cell = next(c for c in out["lateness"] if c["rank"] == 1)
    assert cell == {"rank": 1, "step": 1, "instances": 3, "late_total_us": pytest.approx(140),
                    "late_max_us": pytest.approx(80), "last_count": 2}
    # the costliest late arrival: the first all-reduce, launched in `optimizer` after aten::mm
    # (25 µs), 328 µs before it started (its launch ended at 42)
    text = out["straggler"]
    assert text.startswith("Rank 1 arrived last at 2 of 3")
    assert "the first all_reduce of 4.0 KB in step 1" in text
    assert "optimizer" in text and "aten::mm (25 µs)" in text and "328 µs before it started" in text


def test_no_straggler_when_every_rank_starts_together(tmp_path):
    rank_trace(0, (310, 500, 700)).write(tmp_path / "rank-0.trace.json.gz")
    rank_trace(1, (310, 500, 700)).write(tmp_path / "rank-1.trace.json.gz")
    out = cross_rank(timelines(tmp_path))
    assert out["matched"] == 3 and out["straggler"] is None
    assert all(i["last_rank"] is None and i["start_skew_us"] == 0 for i in out["instances"])


def test_group_ranks_missing_from_the_set_are_named(tmp_path):
    rank_trace(0, (310, 500, 700), group="[0, 1, 2, 3]").write(tmp_path / "rank-0.trace.json.gz")
    rank_trace(1, (370, 480, 780), group="[0, 1, 2, 3]").write(tmp_path / "rank-1.trace.json.gz")
    out = cross_rank(timelines(tmp_path))
    assert out["matched"] == 3 and out["stragglers"][0]["rank"] == 1
    assert any("ranks 2-3 are not in the trace set" in w for w in out["warnings"])


def test_one_rank_has_nothing_to_match(tmp_path):
    rank_trace(0, (310, 500, 700)).write(tmp_path / "rank-0.trace.json.gz")
    out = cross_rank(timelines(tmp_path))
    assert out["matched"] == 0 and out["instances"] == [] and out["straggler"] is None
    assert out["warnings"] == []


def test_group_ranks_parse():
    assert _group_ranks("[0, 1, 2, 3]") == (0, 1, 2, 3)
    assert _group_ranks([3, 1]) == (1, 3)
    assert _group_ranks("[0, 'x']") is None and _group_ranks("__import__('os')") is None
    assert _group_ranks("[]") is None and _group_ranks(None) is None


# ----------------------------------------------------------------------------- the 8-rank set

SAMPLE = "h100x8-normuon"


def read(path):
    with gzip.open(path, "rb") as f:
        return msgspec.json.decode(f.read())


def write(trace, path):
    with gzip.open(path, "wt") as f:
        json.dump(trace, f)


def variant(tmp_path, edits):
    """A copy of the 8-rank sample with ``edits[rank](trace)`` applied to those ranks' JSON."""
    for src in sorted(sample_path(SAMPLE).glob("rank-*.trace.json.gz")):
        rank = int(src.name.split("-")[1].split(".")[0])
        if rank in edits:
            trace = read(src)
            edits[rank](trace)
            write(trace, tmp_path / src.name)
        else:
            shutil.copy(src, tmp_path / src.name)
    return cross_rank(timelines(tmp_path))


def shift(delta_us, cats=None):
    """Move events (all, or those of the categories ``cats``) ``delta_us`` later."""
    def edit(trace):
        for e in trace["traceEvents"]:
            if "ts" in e and (cats is None or e.get("cat") in cats):
                e["ts"] += delta_us
    return edit


def nccl_kernels(trace):
    return sum(1 for e in trace["traceEvents"] if e.get("cat") == "kernel" and "nccl" in e["name"].lower())


def comms_ops(trace):
    return [e for e in trace["traceEvents"] if e.get("name") == "record_param_comms"]


@pytest.fixture(scope="module")
def sample_counts():
    """Per rank, counted from the JSON: NCCL kernels and record_param_comms ops in all and in
    ProfilerStep#13."""
    out = {}
    for src in sorted(sample_path(SAMPLE).glob("rank-*.trace.json.gz")):
        trace = read(src)
        step = next(e for e in trace["traceEvents"] if e.get("cat") == "user_annotation"
                    and e["name"] == "ProfilerStep#13")
        ops = comms_ops(trace)
        in_13 = [e for e in ops if step["ts"] <= e["ts"] < step["ts"] + step["dur"]]
        out[trace["distributedInfo"]["rank"]] = (nccl_kernels(trace), len(ops), len(in_13), step["ts"])
    return out


def test_sample_matches_every_launched_collective(sample_counts):
    out = cross_rank(timelines(sample_path(SAMPLE)))
    ops = {n for _, n, _, _ in sample_counts.values()}
    assert ops == {56}
    assert out["matched"] == 56
    # the NCCL kernels beyond the 56 launched in the window ran before it (ranks 4-7 see more)
    assert out["unmatched"]["no_step"] == sum(k - n for k, n, _, _ in sample_counts.values())
    assert out["unmatched"]["partial"] == 0
    assert all(i["ranks"] == list(range(8)) for i in out["instances"])
    assert out["stragglers"][0]["wait_caused_us"] > 0 and out["straggler"].startswith(
        f"Rank {out['stragglers'][0]['rank']} arrived last")


@pytest.mark.parametrize("rank, delta_us", [(5, 50_000.0), (2, 20_000.0)])
def test_a_rank_moved_later_becomes_the_straggler(tmp_path, rank, delta_us):
    out = variant(tmp_path, {rank: shift(delta_us)})
    assert out["matched"] == 56
    assert out["stragglers"][0]["rank"] == rank
    assert out["stragglers"][0]["last_count"] == 56
    assert all(i["last_rank"] == rank for i in out["instances"])
    # skew = the shift plus that rank's own lateness, which is a few ms at most on this set
    assert statistics.median(i["start_skew_us"] for i in out["instances"]) == pytest.approx(delta_us, abs=1500)
    assert all(abs(i["start_skew_us"] - delta_us) < 7_000 for i in out["instances"])
    assert f"Rank {rank} arrived last at 56 of 56" in out["straggler"]


def test_a_gpu_that_falls_behind_is_named_as_such(tmp_path):
    """Only rank 6's GPU activity moves 30 ms later: its host launched on time."""
    out = variant(tmp_path, {6: shift(30_000.0, cats={"kernel", "gpu_memcpy", "gpu_memset"})})
    assert out["stragglers"][0]["rank"] == 6
    assert "so its GPU, not its host, was behind" in out["straggler"]


def test_two_late_ranks_the_later_is_the_straggler_and_both_show_lateness(tmp_path):
    """Rank 4 arrives 40 ms late, rank 1 20 ms: rank 4 is last everywhere and alone causes the
    waiting (rank 1 waits for it too); the rank × step lateness shows both."""
    out = variant(tmp_path, {1: shift(20_000.0), 4: shift(40_000.0)})
    top = out["stragglers"][0]
    assert (top["rank"], top["last_count"]) == (4, 56) and top["wait_caused_us"] > 0
    assert all(s["last_count"] == 0 for s in out["stragglers"][1:])
    for rank, delta in ((1, 20_000.0), (4, 40_000.0)):
        cells = [c for c in out["lateness"] if c["rank"] == rank]
        assert {c["step"] for c in cells} == {10, 11, 12, 13}
        mean = sum(c["late_total_us"] for c in cells) / sum(c["instances"] for c in cells)
        assert mean == pytest.approx(delta, abs=2_000)


def test_a_rank_that_stops_a_step_early_leaves_that_step_unmatched(tmp_path, sample_counts):
    """Rank 3's trace loses ProfilerStep#13: everything from that step's start, and the GPU work
    launched there. Its collectives of step 13 are then on 7 of 8 ranks only."""
    _, _, in_13, t13 = sample_counts[3]

    def cut(trace):
        launched_late = {e["args"]["correlation"] for e in trace["traceEvents"]
                         if e.get("cat") in ("cuda_runtime", "cuda_driver") and e["ts"] >= t13
                         and "correlation" in e.get("args", {})}
        trace["traceEvents"] = [
            e for e in trace["traceEvents"]
            if not (e.get("ph") == "X" and (e.get("cat") in ("cpu_op", "user_annotation", "cuda_runtime",
                                                             "cuda_driver") and e["ts"] >= t13
                                            or e.get("args", {}).get("correlation") in launched_late))]

    out = variant(tmp_path, {3: cut})
    assert in_13 == 20
    assert out["matched"] == 56 - in_13
    assert out["unmatched"]["partial"] == in_13 * 7
    assert all(i["step"] != 13 for i in out["instances"])
    assert any("not found on every rank" in w for w in out["warnings"])


def test_report_of_the_sample_carries_collectives_and_the_straggler(capsys):
    from speedtrace.analysis.render import render_markdown, render_text
    from speedtrace.analysis.report import build_report
    from speedtrace.analysis.report_sections import report_sections
    from speedtrace.cli import main

    assert main(["report", "--sample", SAMPLE, "--format", "json", "--steps", "11-12"]) == 0
    doc = json.loads(capsys.readouterr().out)
    trace = read(sample_path(SAMPLE) / "rank-0.trace.json.gz")
    windows = [e for e in trace["traceEvents"] if e.get("cat") == "user_annotation"
               and e["name"] in ("ProfilerStep#11", "ProfilerStep#12")]
    in_steps = [e for e in comms_ops(trace) if any(w["ts"] <= e["ts"] < w["ts"] + w["dur"] for w in windows)]
    cross = doc["cross_rank"]
    assert cross["matched"] == len(in_steps) > 0
    assert {i["step"] for i in cross["instances"]} == {11, 12}
    assert cross["unmatched"]["count"] == 0  # kernels outside the chosen steps are not candidates
    assert len(doc["ranks"]) == 8
    for entry in doc["ranks"]:
        rows = entry["collectives"]
        assert {r["step"] for r in rows} == {11, 12} and len(rows) == len(in_steps)
        assert entry["totals"]["comm_wait_inputs_us"] > entry["totals"]["comm_queue_us"] > 0

    report = build_report(load(str(sample_path(SAMPLE))))
    sentence = report["cross_rank"]["straggler"]
    assert sentence.startswith("Rank ")
    text = render_text(report_sections(report))
    assert "collectives across ranks:" in text and "arrival lateness" in text
    assert sentence in text and "collectives by launch phase:" in text
    assert "collectives across ranks" in render_markdown(report_sections(report)).lower()
