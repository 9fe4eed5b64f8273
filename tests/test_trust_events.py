"""Malformed, absurd and repeated events in a real trace (issue #18): each is excluded or counted
once, with one warning per file that gives the count and the rule, and no number goes wrong.

Every test mutates a copy of the bundled h200-speedrun trace and runs `speedtrace report --format
json` in-process. Expected numbers come from the JSON itself (counts, first start, last end).
"""

import gzip
import json

import pytest
from trust_traces import (
    SAMPLE,
    assert_sane,
    count_warnings,
    first_kernel,
    gpu_rows,
    gpu_window,
    last_ending,
    real_trace,
    report_json,
    write_trace,
)

KERNELS = 5261  # kernel events in the sample's JSON
NOT_A_NUMBER = "whose ts or dur is missing or not a finite JSON number"
NEGATIVE = "with a negative dur"
OUTSIDE = "outside any plausible trace window"
NO_DEVICE = "whose pid (the device) is not a non-negative integer"
DUPLICATE = "identical in every field speedtrace reads to an earlier event"


def mutate(tmp_path, change, literals=None):
    """Write the sample with ``change(events)`` applied; report it. (rc, report, stderr, events)."""
    obj = real_trace()
    change(obj["traceEvents"])
    rc, rep, err = report_json(write_trace(tmp_path / "rank-0.trace.json", obj, literals))
    return rc, rep, err, obj["traceEvents"]


def set_field(events, i, key, value):
    events[i] = dict(events[i], **{key: value})


def drop_field(events, i, key):
    events[i] = {k: v for k, v in events[i].items() if k != key}


def assert_one_warning(rep, err, rule, count_text):
    """Exactly one warning names the rule, with the file and the count: once in the report,
    once on stderr."""
    assert count_warnings(rep, err, rule) == (1, 1), (rep["warnings"], err)
    (w,) = [w for w in rep["warnings"] if rule in w]
    assert "rank-0.trace.json" in w and count_text in w, w


def totals(rep):
    (entry,) = rep["ranks"]
    assert entry["device_id"] == 0
    return entry["totals"]


def test_the_unmutated_sample_gets_no_warning(tmp_path):
    rc, rep, err, events = mutate(tmp_path, lambda ev: None)
    assert rc == 0 and rep["warnings"] == [] and "warning" not in err
    lo, hi = gpu_window(events)
    assert totals(rep)["span_us"] == pytest.approx(hi - lo, abs=1e-3)
    assert totals(rep)["kernel_count"] == KERNELS == sum(events[i]["cat"] == "kernel"
                                                         for i in gpu_rows(events))


# The first kernel (the window's left end) given an absurd or invalid start: excluded, and the
# span then starts at the next GPU event.
@pytest.mark.parametrize("value, rule", [
    (2**70, OUTSIDE),
    (1e300, OUTSIDE),
    (-1e300, OUTSIDE),
    (0, OUTSIDE),  # a kernel at ts 0 in a trace at ~5e12 µs: 58 days before the rest
    ("5052077381120.156", NOT_A_NUMBER),  # a number written as a string
    (True, NOT_A_NUMBER),
    (None, NOT_A_NUMBER),
    ("1e999", NOT_A_NUMBER),  # written raw below: valid JSON, beyond float64
    ("missing", NOT_A_NUMBER),
])
def test_bad_start_of_the_first_kernel(tmp_path, value, rule):
    def change(ev):
        i = first_kernel(ev)
        change.i = i
        if value == "missing":
            drop_field(ev, i, "ts")
        else:
            set_field(ev, i, "ts", "HUGE" if value == "1e999" else value)

    rc, rep, err, events = mutate(tmp_path, change, {"HUGE": "1e999"})
    assert rc == 0, err
    assert_one_warning(rep, err, rule, "1 event ")
    assert "(kernel 1)" in [w for w in rep["warnings"] if rule in w][0]
    lo, hi = gpu_window(real_trace()["traceEvents"], skip={change.i})
    t = totals(rep)
    assert t["kernel_count"] == KERNELS - 1
    assert t["span_us"] == pytest.approx(hi - lo, abs=1e-3)
    assert_sane(rep)


# The GPU event that ends last given an absurd or invalid duration.
@pytest.mark.parametrize("value, rule", [
    (1e300, OUTSIDE),
    (2**70, OUTSIDE),
    (4294967296.0, OUTSIDE),  # 2**32 µs (71 minutes): a wrapped 32-bit counter
    (-3.0, NEGATIVE),
    ("10", NOT_A_NUMBER),
    (False, NOT_A_NUMBER),
    ([1], NOT_A_NUMBER),
    ("missing", NOT_A_NUMBER),
])
def test_bad_duration_of_the_last_gpu_event(tmp_path, value, rule):
    def change(ev):
        i = last_ending(ev)
        change.i = i
        if value == "missing":
            drop_field(ev, i, "dur")
        else:
            set_field(ev, i, "dur", value)

    rc, rep, err, events = mutate(tmp_path, change)
    assert rc == 0, err
    assert_one_warning(rep, err, rule, "1 event ")
    lo, hi = gpu_window(real_trace()["traceEvents"], skip={change.i})
    assert totals(rep)["span_us"] == pytest.approx(hi - lo, abs=1e-3)
    assert_sane(rep)


@pytest.mark.parametrize("cat", ["gpu_memcpy", "gpu_memset"])
def test_missing_dur_of_memory_events(tmp_path, cat):
    def change(ev):
        rows = [i for i in gpu_rows(ev) if ev[i]["cat"] == cat][:3]
        change.dur = sum(ev[i]["dur"] for i in rows)
        for i in rows:
            drop_field(ev, i, "dur")

    base_rc, base, _, _ = mutate(tmp_path, lambda ev: None)
    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0
    assert_one_warning(rep, err, NOT_A_NUMBER, "3 events ")
    assert f"({cat} 3)" in [w for w in rep["warnings"] if NOT_A_NUMBER in w][0]
    assert totals(rep)["kernel_count"] == KERNELS
    # The three were counted as memory time before; none of them overlaps another event here,
    # so memory time drops by exactly their durations.
    assert totals(rep)["memory_us"] == pytest.approx(totals(base)["memory_us"] - change.dur, abs=1e-3)


def test_several_rules_in_one_file_one_warning_each(tmp_path):
    def change(ev):
        k = [i for i in gpu_rows(ev) if ev[i]["cat"] == "kernel"]
        set_field(ev, k[10], "dur", -1.0)
        set_field(ev, k[11], "dur", -2.5)
        set_field(ev, k[12], "dur", "7")
        set_field(ev, k[13], "ts", 2**70)
        ops = [i for i, e in enumerate(ev) if e.get("cat") == "cpu_op"]
        set_field(ev, ops[5], "dur", -4.0)

    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0
    assert_one_warning(rep, err, NEGATIVE, "3 events ")
    assert "(kernel 2, cpu_op 1)" in [w for w in rep["warnings"] if NEGATIVE in w][0]
    assert_one_warning(rep, err, NOT_A_NUMBER, "1 event ")
    assert_one_warning(rep, err, OUTSIDE, "1 event ")
    assert totals(rep)["kernel_count"] == KERNELS - 4
    assert_sane(rep)


# ---------------------------------------------------------------------------- duplicates


def test_exact_duplicates_are_counted_once(tmp_path):
    def change(ev):
        k = [i for i in gpu_rows(ev) if ev[i]["cat"] == "kernel"]
        mset = [i for i in gpu_rows(ev) if ev[i]["cat"] == "gpu_memset"][0]
        op = [i for i, e in enumerate(ev) if e.get("cat") == "cpu_op"][100]
        meta = [i for i, e in enumerate(ev) if e.get("ph") == "M"][0]
        # Copies at the end of the file and one right after its original; metadata is not checked.
        ev.extend([dict(ev[k[50]]), dict(ev[mset]), dict(ev[op]), dict(ev[meta])])
        ev.insert(k[50] + 1, dict(ev[k[50]]))

    _, base, _, _ = mutate(tmp_path, lambda ev: None)
    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0
    assert_one_warning(rep, err, DUPLICATE, "4 events ")
    assert "(kernel 2, gpu_memset 1, cpu_op 1)" in [w for w in rep["warnings"] if DUPLICATE in w][0]
    assert totals(rep) == totals(base)
    assert rep["ranks"][0]["kernels"] == base["ranks"][0]["kernels"]


def test_duplicate_collective_kernels_are_counted_once(tmp_path):
    # NCCL kernels of the nccl-a100 sample carry their collective's args, which the loader keeps
    # in a dict per event: two copies must still compare equal.
    sample = SAMPLE.parent.parent / "nccl-a100" / "nccl_data.json.gz"
    obj = json.loads(gzip.decompress(sample.read_bytes()))
    events = obj["traceEvents"]
    nccl = [i for i in gpu_rows(events) if "nccl" in events[i]["name"].lower()]
    assert len(nccl) == 21 and "Collective name" in events[nccl[0]]["args"]
    _, base, _ = report_json(write_trace(tmp_path / "base.json", obj))
    events += [dict(events[i]) for i in nccl[:3]]
    rc, rep, err = report_json(write_trace(tmp_path / "rank-0.trace.json", obj))
    assert rc == 0
    assert_one_warning(rep, err, DUPLICATE, "3 events ")
    assert rep["ranks"][0]["totals"] == base["ranks"][0]["totals"]
    assert rep["ranks"][0]["totals"]["comm_kernel_count"] == 21


def test_near_duplicates_are_kept(tmp_path):
    # Same kernel, same start, another stream: two real events (a split-K pair, say).
    def change(ev):
        i = [i for i in gpu_rows(ev) if ev[i]["cat"] == "kernel"][50]
        ev.append(dict(ev[i], tid=99, args=dict(ev[i]["args"], stream=99)))

    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0 and rep["warnings"] == []
    assert totals(rep)["kernel_count"] == KERNELS + 1


# ---------------------------------------------------------------------------- devices


@pytest.mark.parametrize("pid", ["0", "", None, True, -1, 2**70, 0.5])
def test_gpu_event_without_a_device_number_is_skipped(tmp_path, pid):
    def change(ev):
        i = [i for i in gpu_rows(ev) if ev[i]["cat"] == "kernel"][50]
        set_field(ev, i, "pid", pid)

    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0
    assert_one_warning(rep, err, NO_DEVICE, "1 event ")
    assert [e["device_id"] for e in rep["ranks"]] == [0]  # no "device -1" or "-2" entry
    assert totals(rep)["kernel_count"] == KERNELS - 1


def test_integral_float_pid_is_the_device(tmp_path):
    def change(ev):
        i = [i for i in gpu_rows(ev) if ev[i]["cat"] == "kernel"][50]
        set_field(ev, i, "pid", 0.0)

    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0 and rep["warnings"] == []
    assert totals(rep)["kernel_count"] == KERNELS


# ---------------------------------------------------------------------------- steps


def test_repeated_profiler_step_number(tmp_path):
    # The one ProfilerStep#12 annotation cut in two halves that keep its number.
    def change(ev):
        (i,) = [i for i, e in enumerate(ev) if e.get("name") == "ProfilerStep#12"
                and e.get("cat") == "user_annotation"]
        a = ev[i]
        change.half = a["dur"] / 2
        ev[i] = dict(a, dur=change.half)
        ev.append(dict(a, ts=a["ts"] + change.half, dur=change.half,
                       args=dict(a["args"], **{"External id": 99999999})))

    _, base, _, _ = mutate(tmp_path, lambda ev: None)
    rc, rep, err, _ = mutate(tmp_path, change)
    assert rc == 0
    assert_one_warning(rep, err, "ProfilerStep numbers used by more than one annotation", "#12 ×2")
    (step,) = rep["ranks"][0]["steps"]
    (base_step,) = base["ranks"][0]["steps"]
    assert step["step"] == 12
    assert step["totals"] == base_step["totals"]  # the two windows cover what the one did
    assert step["step_wall_us"] == pytest.approx(251710.473 / 2, abs=1e-3)  # the longest half
