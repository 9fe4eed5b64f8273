"""Fuzzing the report with mutated events of a real trace (issue #18).

A 10 ms slice of the bundled h200-speedrun trace (about 1,900 events: 186 kernels, their
launches, the CPU ops around them and the ProfilerStep annotation) gets a few events changed at
random: fields given other types, absurd or in-range values, hostile strings; keys removed;
events duplicated or replaced by non-objects. `speedtrace report --format json` then runs
in-process and must: raise nothing, exit 0 or 2 (2 with one line naming the file), and on 0
report only finite, non-negative numbers, no interval outside its device's span, and no span
longer than the window of the GPU events that could be valid.
"""

import json
import math
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_traces import GPU_CATS, assert_sane, gpu_window, real_trace, run_cli, write_trace

SLICE_US = 10_000
# Looser than the loader's window rule (10 minutes around the median event), so that the bound
# below holds whatever the rule's details: what it catches is a span from absurd values.
PLAUSIBLE_US = 3600e6


@lru_cache(maxsize=1)
def sliced() -> dict:
    """Metadata events and every event overlapping the first 10 ms of GPU activity (CPU events
    up to 2 ms before it, for the launches)."""
    obj = real_trace()
    lo, _ = gpu_window(obj["traceEvents"])
    keep = [e for e in obj["traceEvents"] if e.get("ph") == "M"
            or (e["ts"] < lo + SLICE_US and e["ts"] + e.get("dur", 0) > lo - 2000)]
    return dict(obj, traceEvents=keep)


HOSTILE = ["a\nb", "tab\there", "\u202eevil", "</script><script>alert(1)</script>", "`code`",
           "\x00\x1b[31m", "x" * 3000, "ProfilerStep#12", "ProfilerStep#-1", "nccl:all_reduce",
           "ncclDevKernel_AllReduce", "kernel", "cpu_op", "X", "M", ""]
ODD_VALUES = [2**70, -(2**70), 2**63, 1e300, -1e300, 0, -1, -3.5, 0.5, True, False, None, [], {},
              [1, 2], {"a": 1}, "10", "-5", "inf", "nan", "BIG"]  # "BIG": written as 1e999
FIELDS = ["ts", "dur", "pid", "tid", "name", "cat", "ph", "args"]
ARGS = ["stream", "correlation", "External id", "device", "grid", "block", "blocks per SM",
        "est. achieved occupancy %", "registers per thread", "shared memory"]


def in_window(draw, key):
    """A plausible ts or dur inside the slice's GPU window."""
    lo, hi = gpu_window(sliced()["traceEvents"])
    if key == "ts":
        return draw(st.floats(lo, hi))
    return draw(st.floats(0, hi - lo))


@lru_cache(maxsize=1)
def targets() -> tuple[list[int], list[int]]:
    """Indices of the slice's GPU events, and of its other complete events."""
    events = sliced()["traceEvents"]
    gpu = [i for i, e in enumerate(events) if e.get("ph") == "X" and e.get("cat") in GPU_CATS]
    other = [i for i, e in enumerate(events) if e.get("ph") == "X" and e.get("cat") not in GPU_CATS]
    return gpu, other


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["set", "set", "set", "set_arg", "drop", "duplicate", "replace"]))
    gpu, other = targets()
    # GPU events are a tenth of the slice: aim at them a third of the time.
    index = draw(st.one_of(st.sampled_from(gpu), st.sampled_from(other),
                           st.integers(0, len(sliced()["traceEvents"]) - 1)))
    if kind == "set":
        key = draw(st.sampled_from(FIELDS[:3] * 3 + FIELDS))
        if key in ("ts", "dur") and draw(st.booleans()):
            value = in_window(draw, key)
        else:
            value = draw(st.sampled_from(ODD_VALUES + HOSTILE))
        return kind, index, key, value
    if kind == "set_arg":
        return kind, index, draw(st.sampled_from(ARGS)), draw(st.sampled_from(ODD_VALUES + HOSTILE))
    if kind == "drop":
        return kind, index, draw(st.sampled_from(FIELDS)), None
    if kind == "replace":
        return kind, index, None, draw(st.sampled_from([1, "x", None, [], [1, 2], True]))
    return kind, index, None, None


def apply(events: list, mutations) -> list:
    events = list(events)
    for kind, i, key, value in mutations:
        e = events[i]
        if kind == "replace" or not isinstance(e, dict):
            events[i] = value
        elif kind == "set":
            events[i] = dict(e, **{key: value})
        elif kind == "set_arg":
            args = e.get("args") if isinstance(e.get("args"), dict) else {}
            events[i] = dict(e, args=dict(args, **{key: value}))
        elif kind == "drop":
            events[i] = {k: v for k, v in e.items() if k != key}
        else:  # an exact copy right after it
            events.insert(i + 1, dict(e))
    return events


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def valid_gpu_window(events: list, center: float) -> tuple[float, float] | None:
    """(first start, last end) over the GPU events that could be valid: numeric ts and dur,
    dur >= 0, an integral pid >= 0, within PLAUSIBLE_US of the original trace's middle."""
    lo, hi = math.inf, -math.inf
    for e in events:
        if not (isinstance(e, dict) and e.get("ph") == "X" and e.get("cat") in GPU_CATS):
            continue
        ts, dur, pid = e.get("ts"), e.get("dur"), e.get("pid")
        if not (is_number(ts) and is_number(dur) and dur >= 0 and is_number(pid)
                and pid >= 0 and float(pid).is_integer()):
            continue
        if abs(ts - center) > PLAUSIBLE_US or abs(ts + dur - center) > PLAUSIBLE_US:
            continue
        lo, hi = min(lo, ts), max(hi, ts + dur)
    return None if hi < lo else (lo, hi)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(mutation(), min_size=1, max_size=5))
def test_mutated_real_trace_keeps_the_invariants(tmp_path, mutations):
    obj = sliced()
    events = apply(obj["traceEvents"], mutations)
    path = write_trace(tmp_path / "rank-0.trace.json", dict(obj, traceEvents=events), {"BIG": "1e999"})
    rc, out, err = run_cli("report", path, "--format", "json")  # an exception fails the test
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert out == "" and len(err.splitlines()) == 1 and str(path) in err, err
        return
    rep = json.loads(out)
    assert_sane(rep)
    lo, hi = gpu_window(obj["traceEvents"])
    window = valid_gpu_window(events, (lo + hi) / 2)
    for entry in rep["ranks"]:
        assert window is not None, rep["warnings"]
        assert entry["totals"]["span_us"] <= window[1] - window[0] + 1e-3, (entry["totals"], window)
