"""Bad input to the loader: one-line SpeedtraceError naming the file, or a warning."""

import gzip
import json
import os
import sys
import tempfile

import pytest

import speedtrace.analysis.decode as decode
from speedtrace.analysis.load import load
from speedtrace.errors import SpeedtraceError

# The module itself (the package's attribute ``load`` is the function).
load_module = sys.modules["speedtrace.analysis.load"]

KERNEL = {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1.0, "dur": 2.0,
          "args": {"device": 0, "stream": 7}}
CPU_OP = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 9, "tid": 9, "ts": 0.5,
          "dur": 3.0}


def good(rank=None, world=None, events=(KERNEL,)):
    obj = {"schemaVersion": 1, "traceEvents": list(events)}
    if rank is not None:
        obj["distributedInfo"] = {"rank": rank, "world_size": world or 1}
    return json.dumps(obj).encode()


def fails(path, *words, **kw):
    with pytest.raises(SpeedtraceError) as info:
        load(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_path(tmp_path):
    fails(tmp_path / "nope.json", "nope.json", "no such file")


def test_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("not a trace")
    fails(tmp_path, str(tmp_path), "no trace files")


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "rank-0.json"
    p.write_bytes(good(0))
    os.chmod(p, 0)
    if os.access(p, os.R_OK):  # root reads anything: make open fail the same way
        def deny(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(decode, "open", deny, raising=False)
    fails(p, "rank-0.json", "cannot read")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(good(0) * 1)
    p = tmp_path / "rank-0.json.gz"
    p.write_bytes(data[: len(data) // 2])
    fails(p, "rank-0.json.gz", "gzip")


def test_half_a_json_file(tmp_path):
    data = good(0, events=[KERNEL] * 50)
    p = tmp_path / "rank-0.json"
    p.write_bytes(data[: len(data) // 2])
    fails(p, "rank-0.json", "truncated")


def test_random_bytes(tmp_path):
    p = tmp_path / "rank-0.json"
    p.write_bytes(bytes(range(7, 256)) * 40)
    fails(p, "rank-0.json", "not valid JSON")


def test_empty_file(tmp_path):
    p = tmp_path / "rank-0.json"
    p.write_bytes(b"")
    fails(p, "rank-0.json", "empty")


@pytest.mark.parametrize("content", [
    {"schemaVersion": 1},
    {"traceEvents": {"ph": "X"}},
    [KERNEL],
    "text",
])
def test_json_that_is_not_a_trace_given_explicitly(tmp_path, content):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(content))
    fails(p, "config.json", "not a trace")


def test_malformed_event_inside_the_array(tmp_path, monkeypatch):
    p = tmp_path / "rank-0.json"
    p.write_bytes(b'{"traceEvents": [{"ph": "X", "cat": "kernel"}, {"ph": "X", "cat": }]}')
    fails(p, "rank-0.json")


@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_broken_event_in_a_long_array(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(decode, "CHUNK_BYTES", chunk)
    events = ",".join([json.dumps(KERNEL)] * 40 + ['{"ph": "X", "cat": }'] + [json.dumps(KERNEL)] * 40)
    p = tmp_path / "rank-0.json"
    p.write_text('{"traceEvents": [' + events + "]}")
    fails(p, "rank-0.json", "not valid JSON")
    p.write_text('{"traceEvents": [' + events.replace('"cat": }', '"cat": "kernel"}') + "]")
    fails(p, "rank-0.json", "truncated")


def test_duplicate_ranks(tmp_path):
    (tmp_path / "a.json").write_bytes(good(1, 2))
    (tmp_path / "b.json").write_bytes(good(1, 2))
    fails(tmp_path, "a.json", "b.json", "rank 1")


def test_several_files_without_rank(tmp_path):
    (tmp_path / "a.json").write_bytes(good())
    (tmp_path / "b.json").write_bytes(good())
    fails(tmp_path, "a.json", "b.json", "no rank")


def spill_dir(tmp_path, monkeypatch):
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))  # forked workers inherit it
    return spill


def test_bad_file_in_parallel_load_names_it(tmp_path, monkeypatch):
    spill = spill_dir(tmp_path, monkeypatch)
    traces = tmp_path / "traces"
    traces.mkdir()
    for rank in range(4):
        (traces / f"rank-{rank}.json").write_bytes(good(rank, 5))
    (traces / "rank-4.json").write_bytes(good(4, 5)[:40])
    fails(traces, "rank-4.json", "truncated", workers=2)
    assert list(spill.iterdir()) == []  # no hand-off file left behind


_REAL_WORKER = load_module._worker


def _dies_on_rank_1(path, spill_dir):
    # Module level so the pool can pickle it; forked workers see this module.
    if path.endswith("rank-1.json"):
        os._exit(9)
    return _REAL_WORKER(path, spill_dir)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the test relies on fork")
def test_dead_loader_process(tmp_path, monkeypatch):
    spill = spill_dir(tmp_path, monkeypatch)
    traces = tmp_path / "traces"
    traces.mkdir()
    for rank in range(3):
        (traces / f"rank-{rank}.json").write_bytes(good(rank, 3))
    monkeypatch.setattr(load_module, "_worker", _dies_on_rank_1)
    fails(traces, "died", workers=2)
    assert list(spill.iterdir()) == []


def test_directory_of_only_non_traces(tmp_path):
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    (tmp_path / "run.json").write_text('{"steps": 2}')
    fails(tmp_path, str(tmp_path), "no trace files")


# ---------------------------------------------------------------------------- warnings


def test_non_trace_json_in_directory_is_skipped_with_warning(tmp_path, capsys):
    (tmp_path / "rank-0.json").write_bytes(good(0))
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    ts = load(tmp_path)
    assert len(ts.ranks) == 1
    assert any("config.json" in w and "skipped" in w for w in ts.warnings)
    assert "config.json" in capsys.readouterr().err


def test_trace_without_gpu_events_warns(tmp_path):
    p = tmp_path / "rank-0.json"
    p.write_bytes(good(0, events=[CPU_OP]))
    ts = load(p)
    assert len(ts.ranks[0].events) == 1
    assert any("rank-0.json" in w and "no GPU events" in w for w in ts.warnings)


def test_single_file_without_rank_warns(tmp_path):
    p = tmp_path / "trace.json"
    p.write_bytes(good())
    assert any("trace.json" in w and "rank 0" in w for w in load(p).warnings)


def test_missing_ranks_of_the_world_warn(tmp_path):
    for rank in (0, 2, 3, 6):
        (tmp_path / f"rank-{rank}.json").write_bytes(good(rank, 8))
    ts = load(tmp_path, workers=1)
    assert [r.rank for r in ts.ranks] == [0, 2, 3, 6]
    assert any("missing 1, 4-5, 7" in w for w in ts.warnings), ts.warnings


def test_unreadable_run_json_warns(tmp_path):
    (tmp_path / "rank-0.json").write_bytes(good(0))
    (tmp_path / "run.json").write_text('{"steps": ')
    ts = load(tmp_path)
    assert ts.run is None and any("run.json" in w for w in ts.warnings)
