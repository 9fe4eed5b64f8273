"""speedtrace annotate: the Perfetto export (analysis/perfetto.py).

On the hand-built step of test_figures (see its docstring for the arithmetic): the counters
change value exactly at the hand-computed times, the gap slices are the hand-computed gaps, the
output is valid Chrome trace JSON, and `speedtrace report` reads the annotated file exactly as
the original (the synthetic events are invisible to the decoder).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest
from synth import Trace
from test_figures import SAMPLES, step_trace

from speedtrace.analysis import load
from speedtrace.analysis.perfetto import CATEGORY, SYNTH_PID_BASE, annotated_json, annotation_events
from speedtrace.cli import main

BASE = 5e12  # synth.Trace's time origin (µs)


def read_trace(path) -> dict:
    opener = gzip.open if str(path).endswith(".gz") else open

    def no_constants(name):
        raise AssertionError(f"non-JSON number {name} in the trace")

    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f, parse_constant=no_constants)


def synthetic(d: dict) -> list[dict]:
    return [e for e in d["traceEvents"] if isinstance(e.get("pid"), int) and e["pid"] >= SYNTH_PID_BASE]


def counter(events, track):
    """[(µs from BASE, value)] of one counter track ("<name> <arg>", as Perfetto names it), in time order."""
    rows = sorted((e["ts"], v) for e in events if e["ph"] == "C" for k, v in e["args"].items()
                  if f"{e['name']} {k}" == track)
    return [(round(ts - BASE, 3), v) for ts, v in rows]


def report_json(path, capsys, *options) -> dict:
    """`speedtrace report PATH --format json`, with the file's path (in `path` and in warnings
    that name it) replaced by TRACE."""
    assert main(["report", str(path), "--format", "json", *options]) == 0
    text = capsys.readouterr().out
    return json.loads(text.replace(json.dumps(str(path))[1:-1], "TRACE"))


@pytest.fixture
def annotated(tmp_path):
    step_trace(tmp_path)
    src = tmp_path / "rank-0.trace.json"
    out = tmp_path / "rank-0.annotated.trace.json.gz"
    assert main(["annotate", str(src), "-o", str(out)]) == 0
    return src, out


def test_counters_by_hand(annotated):
    d = read_trace(annotated[1])
    ev = synthetic(d)
    assert counter(ev, "SM usage Σ blocks/SM") == [(10.0, 1.0), (20.0, 0.0), (40.0, 0.5), (50.0, 0.0)]
    assert counter(ev, "GPU busy") == [(10.0, 1), (32.0, 0), (40.0, 1), (50.0, 0), (60.0, 1), (70.0, 0)]
    assert counter(ev, "comm exposed") == [(10.0, 0), (20.0, 1), (32.0, 0)]
    assert counter(ev, "memory traffic exposed") == [(10.0, 0), (60.0, 1), (70.0, 0)]


def test_gap_phase_and_step_slices_by_hand(annotated):
    ev = synthetic(read_trace(annotated[1]))
    slices = sorted((e["name"], round(e["ts"] - BASE, 3), e["dur"]) for e in ev if e["ph"] == "X")
    assert slices == [("exposed comm: host_late", 20.0, 12.0), ("exposed memory: dependency", 60.0, 10.0),
                      ("forward", 10.0, 60.0), ("idle: dependency", 32.0, 8.0), ("idle: host_late", 50.0, 10.0),
                      ("step 11", 10.0, 60.0)]
    idle = next(e for e in ev if e["name"] == "idle: host_late")
    assert idle["args"]["phase"] == "forward" and idle["args"]["next_event"].startswith("Memcpy")
    assert all(e["cat"] == CATEGORY for e in ev if e["ph"] in "XC")


def test_valid_chrome_trace_and_labelled_threads(annotated):
    d = read_trace(annotated[1])
    assert isinstance(d["traceEvents"], list)
    ev = synthetic(d)
    names = {}
    for e in ev:
        assert e["ph"] in ("X", "C", "M") and isinstance(e["pid"], int) and isinstance(e.get("tid", 0), int)
        if e["ph"] in "XC":
            assert isinstance(e["ts"], float | int)
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["args"], dict)
        if e["ph"] == "C":
            assert all(isinstance(v, int | float) for v in e["args"].values())
        if e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        if e["ph"] == "M" and e["name"] == "process_name":
            assert e["args"]["name"] == "GPU 0 · speedtrace analysis"
    # Every slice's thread is labelled, and slices on one thread never overlap.
    by_thread: dict = {}
    for e in ev:
        if e["ph"] == "X":
            assert (e["pid"], e["tid"]) in names
            by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
    # The original events are all there, unchanged.
    original = read_trace(annotated[0])
    assert d["traceEvents"][:len(original["traceEvents"])] == original["traceEvents"]
    assert {k: v for k, v in d.items() if k != "traceEvents"} == \
        {k: v for k, v in original.items() if k != "traceEvents"}


def test_overlapping_phases_get_their_own_threads(tmp_path):
    t = Trace(rank=0)
    t.step(1, 0, 100)
    t.annotation("optimizer/a/reduce", 1, 10)
    t.annotation("optimizer/b/update", 11, 10)
    t.launch_kernel("ncclDevKernel_ReduceScatter", 2, 10, 50, grid=4, stream=9)   # a/reduce: [10, 60)
    t.launch_kernel("update", 12, 20, 10, grid=132, stream=7)                       # b/update: [20, 30)
    ts = load(t.write(tmp_path / "rank-0.trace.json"))
    ev = annotation_events(ts.ranks[0])
    tids = {e["name"]: e["tid"] for e in ev if e["ph"] == "X" and e["name"].startswith("optimizer")}
    assert tids["optimizer/a/reduce"] != tids["optimizer/b/update"]


def test_report_reads_the_annotated_file_as_the_original(annotated, capsys):
    src, out = annotated
    capsys.readouterr()
    reports = [report_json(path, capsys) for path in (src, out)]
    assert reports[0] == reports[1]
    assert len(load(src).ranks[0].events) == len(load(out).ranks[0].events)


@pytest.mark.parametrize("sample", ["nccl-a100", "h200-speedrun"])
def test_round_trip_on_bundled_samples(sample, tmp_path, capsys):
    folder = os.path.join(SAMPLES, sample)
    [name] = [n for n in os.listdir(folder) if n.endswith(".json.gz") and n != "run.json"]
    src = os.path.join(folder, name)
    out = tmp_path / name.replace(".json.gz", ".annotated.json.gz")
    assert main(["annotate", src, "-o", str(out)]) == 0
    capsys.readouterr()
    reports = [report_json(path, capsys, "--top", "1000") for path in (src, str(out))]
    assert reports[0] == reports[1]
    assert synthetic(read_trace(out))


def test_plain_json_output_and_empty_events(tmp_path):
    t = Trace(rank=0)
    t.events = []
    src = t.write(tmp_path / "rank-0.trace.json")
    data = json.loads(annotated_json(str(src), [{"ph": "M", "name": "process_name", "pid": SYNTH_PID_BASE,
                                                 "tid": 0, "args": {"name": "x"}}]))
    assert data["traceEvents"] == [{"ph": "M", "name": "process_name", "pid": SYNTH_PID_BASE, "tid": 0,
                                    "args": {"name": "x"}}]


def test_bad_input(tmp_path, capsys):
    src = step_trace(tmp_path).ranks[0].path
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(src, two / "rank-0.trace.json")
    t = Trace(rank=1)
    t.launch_kernel("k", 1, 2, 3, grid=1)
    t.write(two / "rank-1.trace.json")
    cases = [
        (["annotate", str(two), "-o", str(tmp_path / "o.json")], "2 rank traces"),
        (["annotate", src, "-o", str(tmp_path / "missing" / "o.json")], "does not exist"),
        (["annotate", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o.json")], "no such file"),
        (["annotate", src, "-o", src], "is the input trace"),
        (["annotate", src, "--sample", "h200-record", "-o", str(tmp_path / "o.json")], "not both"),
        (["annotate", src], "-o FILE"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
