"""Where HTA's numbers differ from speedtrace's, and which of HTA's filters accounts for each
difference, number by number (docs/metrics.md "Agreement with HTA").

On HTA's own test traces (tests/fixtures/hta, MIT, see ATTRIBUTION.md there) and on the bundled
nccl-a100 sample (also HTA test data):
- HTA counts a ``cuda_sync`` event that carries a stream as GPU time;
- with two or more profiler steps, HTA drops GPU events whose launch is not in the trace;
- HTA rounds fractional timestamps (start up, end down to the µs).
Each test takes the filter away (removes those events, or applies the rounding itself) and
then finds HTA's figures exactly.
"""

import gzip
import json
import logging
import math
import re
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from speedtrace.analysis.load import load
from speedtrace.analysis.report import build_report

pytest.importorskip("hta")
pytestmark = pytest.mark.filterwarnings("ignore")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hta"
NCCL_SAMPLE = Path(__file__).resolve().parents[1] / "speedtrace" / "samples" / "nccl-a100" / "nccl_data.json.gz"
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def read(path: Path, **kw) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()), **kw)


def write(path: Path, obj: dict) -> Path:
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    return path


def hta_breakdown(path: Path, rank: int, *, rounding: bool = True) -> dict:
    """HTA's temporal breakdown of one file, run as the HTA bridge runs it."""
    from hta.configs import env_options
    from hta.trace_analysis import TraceAnalysis

    options = env_options.HTAEnvOptions.instance()
    before = options.disable_ns_rounding()
    options.set_disable_ns_rounding(not rounding)
    logging.disable(logging.WARNING)  # HTA logs its rounding at warning level, per file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ta = TraceAnalysis(trace_files={rank: str(path)}, trace_dir=str(path.parent),
                               include_last_profiler_step=True)
            row = ta.get_temporal_breakdown(visualize=False).iloc[0]
    finally:
        options.set_disable_ns_rounding(before)
        logging.disable(logging.NOTSET)
    return {"span_us": float(row["kernel_time(us)"]), "idle_us": float(row["idle_time(us)"]),
            "compute_us": float(row["compute_time(us)"]),
            "non_compute_us": float(row["non_compute_time(us)"])}


def ours(path: Path) -> dict:
    (entry,) = build_report(load(path))["ranks"]
    return entry["totals"]


def gpu_events(obj: dict) -> list[dict]:
    return [e for e in obj["traceEvents"] if e.get("ph") == "X" and e.get("cat") in GPU_CATS]


# ---------------------------------------------------------------------------- cuda_sync


def test_hta_counts_cuda_sync_with_a_stream_as_gpu_time(tmp_path):
    path = FIXTURES / "event_sync_trace.json.gz"
    obj = read(path)
    syncs = [e for e in obj["traceEvents"] if e.get("cat") == "cuda_sync"]
    assert sorted(e["name"] for e in syncs) == ["Context Sync", "Event Sync", "Event Sync", "Stream Sync"]
    # Only the Stream Sync carries a stream (7); the others are written with stream -1.
    with_stream = [e for e in syncs if e["args"]["stream"] >= 0]
    assert [(e["name"], e["dur"]) for e in with_stream] == [("Stream Sync", 5)]

    mine, theirs = ours(path), hta_breakdown(path, 0)
    # By hand: kernels of 1, 11, 1 and 36 µs and a 2 µs memcpy, none overlapping, from
    # 512145 to 512408: span 263, busy 51.
    assert (mine["span_us"], mine["busy_us"], mine["idle_us"]) == (263, 51, 212)
    assert (mine["compute_us"], mine["memory_us"]) == (49, 2)
    # HTA: the same span and compute, but the Stream Sync's 5 µs (inside the span, overlapping
    # nothing) are busy for it: idle 5 less, non-compute GPU time 5 more than our memory time.
    assert theirs == {"span_us": 263, "idle_us": 212 - 5, "compute_us": 49, "non_compute_us": 2 + 5}

    # Without its cuda_sync events the trace gives HTA exactly our numbers.
    bare = write(tmp_path / "event_sync_trace.json.gz",
                 dict(obj, traceEvents=[e for e in obj["traceEvents"] if e.get("cat") != "cuda_sync"]))
    assert hta_breakdown(bare, 0) == {"span_us": 263, "idle_us": 212, "compute_us": 49, "non_compute_us": 2}
    assert ours(bare)["idle_us"] == 212


# ---------------------------------------------------------------------------- launches


def test_hta_drops_gpu_events_whose_launch_is_not_in_the_trace(tmp_path):
    path = FIXTURES / "trace_compare_base.json.gz"
    obj = read(path)
    steps = {e["name"] for e in obj["traceEvents"] if e["name"].startswith("ProfilerStep#")}
    assert len(steps) == 2  # HTA filters only traces with two or more profiler steps
    launched = {e["args"]["correlation"] for e in obj["traceEvents"] if e.get("cat") == "cuda_runtime"}
    gpu = gpu_events(obj)
    kept = [e for e in gpu if e["args"]["correlation"] in launched]
    assert (len(gpu), len(kept)) == (18, 2)
    assert [(e["ts"], e["dur"]) for e in kept] == [(1661938466422491, 4), (1661938466539619, 4)]

    mine, theirs = ours(path), hta_breakdown(path, 1)
    # By hand, all 18 events: from the memcpy at ...265125 to the kernel ending at ...539623.
    assert mine["span_us"] == 539623 - 265125
    # HTA keeps the two launched kernels: 539623 - 422491 = 117132 µs of which 8 busy.
    assert theirs == {"span_us": 117132, "idle_us": 117132 - 8, "compute_us": 8, "non_compute_us": 0}

    # The trace without the 16 GPU events that have no launch: our numbers are HTA's.
    only = write(tmp_path / "trace_compare_base.json.gz",
                 dict(obj, traceEvents=[e for e in obj["traceEvents"]
                                        if e not in gpu or e in kept]))
    again = ours(only)
    assert (again["span_us"], again["idle_us"], again["compute_us"]) == (117132, 117124, 8)


# ---------------------------------------------------------------------------- rounding


def union_hta_style(start: np.ndarray, end: np.ndarray) -> tuple[float, float, float]:
    """(first start, last end, busy) with HTA's interval merge, written out independently:
    sorted by start, a new group begins where the start exceeds every earlier end."""
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(np.concatenate([[-np.inf], e[:-1]]))
    group = np.cumsum(s > reach)
    busy = sum(e[group == g].max() - s[group == g].min() for g in np.unique(group))
    return float(s.min()), float(e.max()), float(busy)


def test_hta_rounds_fractional_timestamps():
    obj = read(NCCL_SAMPLE, parse_float=Decimal)  # the decimals as written, exactly
    gpu = gpu_events(obj)
    # The premises: no cuda_sync event, no CPU event with a stream, every GPU event launched
    # in the trace; so rounding is the one filter left.
    assert not [e for e in obj["traceEvents"] if e.get("cat") == "cuda_sync"]
    assert not [e for e in obj["traceEvents"] if e.get("ph") == "X" and e.get("cat") not in GPU_CATS
                and isinstance(e.get("args"), dict) and "stream" in e["args"]]
    launched = {e["args"]["correlation"] for e in obj["traceEvents"]
                if e.get("cat") in ("cuda_runtime", "cuda_driver")}
    assert all(e["args"]["correlation"] in launched for e in gpu)
    assert sum(e["ts"] != int(e["ts"]) for e in gpu) > len(gpu) / 2  # fractional timestamps

    # Exact: the written decimals relative to the first start, summed in Decimal. HTA's
    # rounding: on the float64 values it parses, start + dur in float64, as HTA computes them.
    base = min(e["ts"] for e in gpu)
    start = np.array([float(e["ts"] - base) for e in gpu])
    end = np.array([float(e["ts"] + e["dur"] - base) for e in gpu])
    ts_f = np.array([float(e["ts"]) for e in gpu])
    end_f = ts_f + np.array([float(e["dur"]) for e in gpu])
    compute = np.array([e["cat"] == "kernel" and not re.search("nccl", e["name"], re.I) for e in gpu])

    def breakdown(s, e):
        lo, hi, busy = union_hta_style(s, e)
        return {"span_us": hi - lo, "idle_us": hi - lo - busy,
                "compute_us": union_hta_style(s[compute], e[compute])[2]}

    exact = breakdown(start, end)
    rounded = breakdown(np.ceil(ts_f), np.floor(end_f))  # HTA: start rounded up, end down
    mine, theirs = ours(NCCL_SAMPLE), hta_breakdown(NCCL_SAMPLE, 0)
    for key in ("span_us", "idle_us", "compute_us"):
        assert mine[key] == pytest.approx(exact[key], abs=1e-6), key
        assert theirs[key] == rounded[key], key
    # The rounding is worth whole milliseconds here: idle +3.5 ms, compute -2.6 ms.
    assert theirs["idle_us"] - mine["idle_us"] == pytest.approx(3461.009, abs=0.01)
    assert theirs["compute_us"] - mine["compute_us"] == pytest.approx(-2643.847, abs=0.01)
    assert math.isclose(theirs["span_us"], 660550)

    # HTA with its rounding switched off gives our numbers (to its float64 sums of absolute
    # times near 4.5e12 µs, where float64 steps by 0.001 µs).
    unrounded = hta_breakdown(NCCL_SAMPLE, 0, rounding=False)
    for key in ("span_us", "idle_us", "compute_us"):
        assert unrounded[key] == pytest.approx(mine[key], abs=0.01), key
