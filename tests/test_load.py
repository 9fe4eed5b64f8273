"""The trace loader: columns, filtering, robustness, ranks, chunked decoding, real traces."""

import gzip
import json
import math
from decimal import Decimal

import numpy as np
import pytest
from conftest import shared_path

import speedtrace.analysis.decode as decode
from speedtrace.analysis.events import COLUMNS, Cat
from speedtrace.analysis.load import discover, load, load_rank_file

# Written out here rather than imported, so a wrong mapping in the loader shows up.
KEPT = {
    "kernel": Cat.KERNEL, "Kernel": Cat.KERNEL, "gpu_memcpy": Cat.GPU_MEMCPY,
    "gpu_memset": Cat.GPU_MEMSET, "gpu_user_annotation": Cat.GPU_USER_ANNOTATION,
    "cuda_runtime": Cat.CUDA_RUNTIME, "cuda_driver": Cat.CUDA_DRIVER, "cpu_op": Cat.CPU_OP,
    "user_annotation": Cat.USER_ANNOTATION, "cuda_sync": Cat.CUDA_SYNC,
}


def kernel(name="k", ts=100.0, dur=5.0, pid=0, stream=7, corr=1, **args):
    a = {
        "External id": 11, "queued": 0, "device": pid, "context": 1, "stream": stream,
        "correlation": corr, "registers per thread": 32, "shared memory": 1024,
        "blocks per SM": 0.5, "warps per SM": 2.0, "grid": [4, 2, 1], "block": [128, 1, 1],
        "est. achieved occupancy %": 25,
    }
    a.update(args)
    return {"ph": "X", "cat": "kernel", "name": name, "pid": pid, "tid": stream, "ts": ts,
            "dur": dur, "args": a}


def ev(cat, name, ts, dur=1.0, pid=1234, tid=1, ph="X", **args):
    e = {"ph": ph, "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if args:
        e["args"] = args
    return e


def trace(events, rank=None, world=None, meta_after=False, **meta):
    head = {"schemaVersion": 1}
    if rank is not None:
        head["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": world or 1}
    head.update(meta)
    if meta_after:
        return {"traceEvents": events, **head}
    return {**head, "traceEvents": events}


def write(path, obj, gz=False, indent=None):
    text = json.dumps(obj, indent=indent).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def names(table):
    return [table.names[i] for i in table.name]


# ---------------------------------------------------------------------------- columns


def test_columns_dtypes_and_filtering(tmp_path):
    events = [
        ev("cpu_op", "aten::mm", 10.0, 50.0, **{"External id": 11}),
        ev("cuda_runtime", "cudaLaunchKernel", 20.0, 4.0, correlation=1, **{"External id": 11}),
        kernel("gemm", ts=30.0, dur=5.0),
        ev("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", 40.0, 2.0, pid=0, tid=8,
           stream=8, correlation=2, device=0),
        ev("gpu_memset", "Memset (Device)", 45.0, 1.0, pid=0, tid=8),
        # dropped: not 'X', or a category no analysis reads
        ev("python_function", "nn.Module: GPT", 5.0, 90.0),
        ev("overhead", "Activity Buffer Request", 6.0, 1.0),
        ev("Trace", "PyTorch Profiler (0)", 0.0, 100.0),
        {"ph": "s", "id": 1, "pid": 1234, "tid": 1, "ts": 20.0, "cat": "ac2g", "name": "ac2g"},
        {"ph": "f", "id": 1, "pid": 0, "tid": 7, "ts": 30.0, "cat": "ac2g", "name": "ac2g",
         "bp": "e"},
        {"name": "process_name", "ph": "M", "ts": 0, "pid": 0, "tid": 0,
         "args": {"name": "python"}},
        {"name": "Iteration Start: PyTorch Profiler", "ph": "i", "s": "g", "pid": "Traces",
         "tid": "Trace PyTorch Profiler", "ts": 1.0},
    ]
    r = load_rank_file(write(tmp_path / "t.json", trace(events)))
    t = r.events
    assert len(t) == 5
    for key, dtype in COLUMNS.items():
        assert getattr(t, key).dtype == np.dtype(dtype), key
        assert len(getattr(t, key)) == 5
    assert list(t.cat) == [Cat.CPU_OP, Cat.CUDA_RUNTIME, Cat.KERNEL, Cat.GPU_MEMCPY,
                           Cat.GPU_MEMSET]
    assert names(t) == ["aten::mm", "cudaLaunchKernel", "gemm",
                        "Memcpy HtoD (Pageable -> Device)", "Memset (Device)"]
    assert r.origin_ts_us == 10.0
    assert list(t.ts) == [0.0, 10.0, 20.0, 30.0, 35.0]
    assert list(t.dur) == [50.0, 4.0, 5.0, 2.0, 1.0]
    k = 2
    assert (t.pid[k], t.tid[k], t.stream[k], t.correlation[k], t.external_id[k]) == (0, 7, 7, 1, 11)
    assert (t.device[k], t.grid_blocks[k], t.block_threads[k]) == (0, 8, 128)
    assert (t.blocks_per_sm[k], t.occupancy_pct[k]) == (0.5, 25.0)
    assert (t.registers[k], t.shared_memory[k]) == (32, 1024)
    # args absent from an event read as missing values
    assert list(t.external_id) == [11, 11, 11, -1, -1]
    assert list(t.correlation) == [-1, 1, 1, 2, -1]
    assert list(t.grid_blocks) == [-1, -1, 8, -1, -1]
    assert np.isnan(t.blocks_per_sm[[0, 1, 3, 4]]).all()
    assert r.gpu_devices() == [0]


def test_odd_but_valid_events(tmp_path):
    events = [
        ev("user_annotation", "ProfilerStep#3", 1.0, 10.0, pid="Spans", tid=""),
        ev("cpu_op", "aten::add", 2.0, 1.0, pid="", tid=-18),
        # (an event without dur is excluded with a warning: tests/test_trust_events.py)
        {"ph": "X", "cat": "cpu_op", "name": "no args", "pid": 1, "tid": 1, "ts": 3.0, "dur": 0.0},
        {"ph": "X", "cat": "Kernel", "name": "legacy spelling", "pid": 0, "tid": 7, "ts": 4.0,
         "dur": 1.0, "args": {"device": 0, "stream": 7}},
        kernel("inf bps", ts=5.0, **{"blocks per SM": "inf"}),
        kernel("numbers as strings", ts=6.0, corr="42", **{"registers per thread": "16",
                                                           "blocks per SM": "1.5"}),
    ]
    t = load_rank_file(write(tmp_path / "t.json", trace(events))).events
    assert list(t.pid) == [-2, -2, 1, 0, 0, 0]
    assert list(t.tid) == [-2, -18, 1, 7, 7, 7]
    assert t.dur[2] == 0.0 and t.external_id[2] == -1
    assert t.cat[3] == Cat.KERNEL
    assert (t.grid_blocks[3], t.block_threads[3], t.registers[3]) == (-1, -1, -1)
    assert np.isnan(t.blocks_per_sm[3]) and np.isnan(t.occupancy_pct[3])
    assert np.isnan(t.blocks_per_sm[4]) and t.grid_blocks[4] == 8
    assert (t.correlation[5], t.registers[5], t.blocks_per_sm[5]) == (42, 16, 1.5)


def test_wrongly_typed_fields_become_missing_values(tmp_path):
    events = [
        kernel("ok", ts=1.0),
        kernel("bad", ts=2.0, stream=[1], grid="4x2", correlation={"x": 1}),
        # (a string ts or dur excludes the event with a warning: tests/test_trust_events.py)
        {"ph": "X", "cat": "cpu_op", "name": 12, "pid": 1.5, "tid": None, "ts": 3.5,
         "dur": 0.0, "args": [1, 2]},
    ]
    t = load_rank_file(write(tmp_path / "t.json", trace(events))).events
    assert names(t) == ["ok", "bad", "12"]
    assert list(t.stream) == [7, -1, -1]
    assert list(t.grid_blocks) == [8, -1, -1]
    assert list(t.correlation) == [1, -1, -1]
    assert list(t.ts) == [0.0, 1.0, 2.5]
    assert (t.pid[2], t.tid[2], t.dur[2]) == (-1, -1, 0.0)


@pytest.mark.parametrize("first, later", [
    ("5052077125289.602", "5052077125290.658"),
    ("4458676416788.066", "4458676522690.655"),  # parsed values 0.47 ns off: rounding matters
    ("4458676416788.066", "4458676416788.067"),
])
def test_fractional_timestamps_keep_nanoseconds(tmp_path, first, later):
    text = ('{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "a", "pid": 0, "tid": 7, '
            f'"ts": {later}, "dur": 1.056}}, {{"ph": "X", "cat": "cuda_runtime", "name": "b", '
            f'"pid": 1, "tid": 1, "ts": {first}, "dur": 3.0}}]}}')
    (tmp_path / "t.json").write_text(text)
    r = load_rank_file(tmp_path / "t.json")
    assert abs(r.origin_ts_us - float(first)) < 1e-3
    want = float(Decimal(later) - Decimal(first))
    assert abs(r.events.ts[0] - want) < 1e-6
    assert r.events.ts[1] == 0.0
    assert r.events.ts.dtype == np.float64


def test_large_integer_timestamps(tmp_path):
    events = [kernel("a", ts=1682725898082228), kernel("b", ts=1682725898079292)]
    r = load_rank_file(write(tmp_path / "t.json", trace(events)))
    assert list(r.events.ts) == [2936.0, 0.0]
    assert r.origin_ts_us == 1682725898079292.0


def test_metadata_after_trace_events_and_flags(tmp_path):
    props = [{"id": 0, "name": "NVIDIA H200", "numSms": 132, "maxThreadsPerMultiprocessor": 2048},
             {"id": 1, "name": "NVIDIA H200", "numSms": 132, "maxThreadsPerMultiprocessor": 2048}]
    events = [kernel("a", ts=1.0, pid=0), kernel("b", ts=2.0, pid=1)]
    obj = trace(events, rank=3, world=4, meta_after=True, deviceProperties=props,
                record_shapes=1, with_stack=True, traceName="x.json")
    r = load_rank_file(write(tmp_path / "t.json", obj))
    assert r.rank == 3 and r.world_size == 4
    assert r.distributed_info["backend"] == "nccl"
    assert (r.record_shapes, r.with_stack, r.profile_memory) == (True, True, False)
    assert sorted(r.devices) == [0, 1]
    assert r.devices[1].num_sms == 132 and r.devices[1].max_threads_per_sm == 2048
    assert r.devices[0].name == "NVIDIA H200"
    assert r.gpu_devices() == [0, 1]
    assert r.metadata["traceName"] == "x.json"


def test_gzip_and_plain_give_the_same_table(tmp_path):
    obj = trace([kernel("a", ts=1.5), ev("cpu_op", "op", 0.25, 3.0)], rank=0)
    a = load_rank_file(write(tmp_path / "a.json", obj)).events
    b = load_rank_file(write(tmp_path / "b.json.gz", obj, gz=True)).events
    for key in COLUMNS:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


# ---------------------------------------------------------------------------- ranks, sets


def test_rank_from_distributed_info_orders_the_set(tmp_path):
    write(tmp_path / "a.json", trace([kernel(ts=1.0)], rank=1, world=2))
    write(tmp_path / "b.json.gz", trace([kernel(ts=2.0)], rank=0, world=2), gz=True)
    ts = load(tmp_path)
    assert [r.rank for r in ts.ranks] == [0, 1]
    assert [r.path.rsplit("/", 1)[1] for r in ts.ranks] == ["b.json.gz", "a.json"]
    assert ts.world_size == 2 and ts.warnings == [] and ts.run is None


def test_rank_from_file_name(tmp_path):
    write(tmp_path / "trace_rank3.json", trace([kernel(ts=1.0)]))
    write(tmp_path / "job-RANK-1.pt.trace.json", trace([kernel(ts=1.0)]))
    write(tmp_path / "rank_2.json.gz", trace([kernel(ts=1.0)]), gz=True)
    assert [r.rank for r in load(tmp_path).ranks] == [1, 2, 3]


def test_single_file_without_rank_is_rank_0_with_warning(tmp_path):
    ts = load(write(tmp_path / "trace.json", trace([kernel(ts=1.0)])))
    assert [r.rank for r in ts.ranks] == [0]
    assert any("no rank" in w and "trace.json" in w for w in ts.warnings)


def test_run_json_is_read_as_metadata(tmp_path):
    write(tmp_path / "rank-0.trace.json", trace([kernel(ts=1.0)], rank=0))
    (tmp_path / "run.json").write_text(json.dumps({"steps": [11, 12], "world_size": 1}))
    files, run, warnings = discover(tmp_path)
    assert [f.rsplit("/", 1)[1] for f in files] == ["rank-0.trace.json"]
    # run.json has a schema (profiling/runinfo.py): "steps" is not one of its fields
    assert run.world_size == 1 and len(warnings) == 1 and "unknown fields ignored (steps)" in warnings[0]
    ts = load(tmp_path)
    assert ts.run.world_size == 1 and len(ts.ranks) == 1


def test_parallel_load_equals_sequential(tmp_path):
    for rank in range(3):
        evs = [kernel(f"k{i % 5}", ts=1000.0 * rank + i * 1.25, corr=i) for i in range(300)]
        evs += [ev("cpu_op", f"op{i % 7}", 1000.0 * rank + i, 0.5) for i in range(200)]
        write(tmp_path / f"rank-{rank}.json", trace(evs, rank=rank, world=3))
    seq = load(tmp_path, workers=1)
    par = load(tmp_path, workers=3)
    assert [r.rank for r in par.ranks] == [0, 1, 2]
    for a, b in zip(seq.ranks, par.ranks):
        assert a.path == b.path and a.origin_ts_us == b.origin_ts_us
        assert names(a.events) == names(b.events)
        for key in COLUMNS:
            np.testing.assert_array_equal(getattr(a.events, key), getattr(b.events, key))


def test_progress_on_request(tmp_path, capsys):
    write(tmp_path / "rank-0.json", trace([kernel(ts=1.0)], rank=0))
    load(tmp_path, progress=True)
    assert "1/1 files" in capsys.readouterr().err


# ---------------------------------------------------------------------------- chunk cuts


def reference_rows(obj):
    """The kept events decoded independently with the json module: one tuple per event."""
    evs = [e for e in obj["traceEvents"] if e.get("ph") == "X" and e.get("cat") in KEPT]
    t0 = min(Decimal(repr(e["ts"])) for e in evs)
    rows = []
    for e in evs:
        a = e.get("args") or {}
        rows.append((
            e["name"], int(KEPT[e["cat"]]), e["pid"], e["tid"],
            float(Decimal(repr(e["ts"])) - t0), e.get("dur", 0.0),
            a.get("stream", -1), a.get("correlation", -1), a.get("External id", -1),
            math.prod(a["grid"]) if "grid" in a else -1,
        ))
    return rows


def loaded_rows(t):
    return [
        (t.names[t.name[i]], int(t.cat[i]), int(t.pid[i]), int(t.tid[i]), float(t.ts[i]),
         float(t.dur[i]), int(t.stream[i]), int(t.correlation[i]), int(t.external_id[i]),
         int(t.grid_blocks[i]))
        for i in range(len(t))
    ]


@pytest.mark.parametrize("indent", [None, 1])
@pytest.mark.parametrize("chunk", [1, 37, 200, 10**6])
def test_chunk_cuts_fall_between_events(tmp_path, monkeypatch, indent, chunk):
    tricky = ['a},{b', '},{"ph":"X"}', '{', '}', '"},{"', 'x}, {y', '\\},{', '}]', '[{']
    evs = []
    for i in range(120):
        name = tricky[i % len(tricky)] + f"#{i}"
        if i % 3 == 0:
            evs.append(kernel(name, ts=round(5052077125289.602 + i * 1.001, 3), corr=i, grid=[i + 1, 2, 1]))
        elif i % 3 == 1:
            evs.append(ev("cpu_op", name, 5052077125289.0 + i, 0.75, tid=i,
                          **{"External id": i, "Input Dims": [[1, 2], [3]],
                             "extra": [{"a": "},{"}, {"b": {"c": 1}}]}))
        else:
            evs.append(ev("python_function", name, 5052077125289.5 + i, 1.0,
                          **{"Python id": i, "x": "},{"}))
    # Metadata after the array holds '},{' too: cuts there must not be taken for events.
    props = [{"id": 0, "numSms": 132}, {"id": 1, "numSms": 132}]
    obj = trace(evs, rank=0, meta_after=bool(chunk % 2), traceName="},{", deviceProperties=props)
    monkeypatch.setattr(decode, "CHUNK_BYTES", chunk)
    decoded = []
    real = decode._decode_chunk
    monkeypatch.setattr(decode, "_decode_chunk", lambda b: decoded.append(1) or real(b))
    r = load_rank_file(write(tmp_path / "t.json", obj, indent=indent))
    got = loaded_rows(r.events)
    want = reference_rows(obj)
    assert len(got) == len(want) == 80
    assert r.devices[1].num_sms == 132 and r.metadata["traceName"] == "},{"
    if chunk < 100:  # cut after (nearly) every event, not given up on at the first tricky name
        assert len(decoded) > 60
    for g, w in zip(got, want):
        assert g[:4] == w[:4] and g[5:] == w[5:]
        assert abs(g[4] - w[4]) < 1e-6


def test_chunked_read_matches_whole_read(tmp_path, monkeypatch):
    evs = [kernel(f"k{i}", ts=i * 0.5, corr=i) for i in range(500)]
    path = write(tmp_path / "t.json", trace(evs, rank=0))
    whole = load_rank_file(path).events
    monkeypatch.setattr(decode, "CHUNK_BYTES", 1000)
    chunks = []
    real = decode._decode_chunk
    monkeypatch.setattr(decode, "_decode_chunk", lambda b: chunks.append(len(b)) or real(b))
    cut = load_rank_file(path).events
    assert len(chunks) > 50  # the knob really split the array
    assert names(cut) == names(whole)
    for key in COLUMNS:
        np.testing.assert_array_equal(getattr(cut, key), getattr(whole, key))


@pytest.mark.parametrize("head", [
    '{"note": {"traceEvents": [1, 2]}, ',          # the key nested in an earlier value
    '{"note": "say \\"traceEvents\\": [ here", ',  # ... or inside a string
])
def test_trace_events_key_found_only_at_top_level(tmp_path, head):
    events = [kernel("a", ts=1.0), kernel("b", ts=3.0)]
    text = head + '"traceEvents": ' + json.dumps(events) + ', "distributedInfo": {"rank": 5}}'
    (tmp_path / "t.json").write_text(text)
    r = load_rank_file(tmp_path / "t.json")
    assert names(r.events) == ["a", "b"] and list(r.events.ts) == [0.0, 2.0]
    assert r.rank == 5 and "note" in r.metadata


def test_multi_member_gzip(tmp_path):
    # The trailer's length field is the last member's only: the output must grow past it.
    obj = trace([kernel(f"k{i}", ts=float(i)) for i in range(500)], rank=0)
    text = json.dumps(obj).encode()
    assert len(text) > 1 << 17
    (tmp_path / "multi.json.gz").write_bytes(gzip.compress(text[:-10]) + gzip.compress(text[-10:]))
    t = load_rank_file(tmp_path / "multi.json.gz").events
    assert names(t) == [f"k{i}" for i in range(500)]


def test_empty_event_list(tmp_path):
    ts = load(write(tmp_path / "rank-0.json", trace([], rank=0)))
    assert len(ts.ranks[0].events) == 0 and ts.ranks[0].origin_ts_us == 0.0


# ---------------------------------------------------------------------------- real traces


def count_with_json(path):
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    counts = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in KEPT:
            counts[KEPT[e["cat"]]] = counts.get(KEPT[e["cat"]], 0) + 1
    return counts


def test_real_h200_trace():
    path = shared_path("external-traces", "h200-speedrun-record233-noshapes",
                       "rank-0.trace.json.gz")
    r = load_rank_file(path)
    got = {Cat(c): int(n) for c, n in zip(*np.unique(r.events.cat, return_counts=True))}
    assert got == count_with_json(path)
    assert got[Cat.KERNEL] == 10549 and got[Cat.GPU_MEMSET] == 1060
    assert got[Cat.GPU_MEMCPY] == 74
    assert r.rank == 0 and r.world_size == 1 and r.devices[0].num_sms == 132
    assert r.record_shapes is False and r.events.ts.min() == 0.0


def test_real_sampled_two_rank_set():
    ts = load(shared_path("external-traces", "hta-sampled-2rank"))
    assert [r.rank for r in ts.ranks] == [0, 1]
    for r in ts.ranks:
        assert {Cat(c): int(n) for c, n in zip(*np.unique(r.events.cat, return_counts=True))} \
            == count_with_json(r.path)
        assert r.record_shapes is True and r.devices == {}
    assert any("world_size 128" in w for w in ts.warnings)


def test_real_nccl_trace_every_column():
    """Every kept event of a real trace against an independent json + Decimal decoding."""
    path = shared_path("external-traces", "hta-nccl-a100", "nccl_data.json.gz")
    with gzip.open(path) as f:
        obj = json.loads(f.read(), parse_float=Decimal)
    evs = [e for e in obj["traceEvents"] if e.get("ph") == "X" and e.get("cat") in KEPT]
    t0 = min(e["ts"] for e in evs)
    r = load_rank_file(path)
    t = r.events
    assert len(t) == len(evs) and r.origin_ts_us == float(t0)
    assert sorted(r.devices) == list(range(8)) and r.devices[3].num_sms == 108
    for i, e in enumerate(evs):
        a = e.get("args") or {}
        assert t.names[t.name[i]] == e["name"] and t.cat[i] == KEPT[e["cat"]]
        assert abs(t.ts[i] - float(e["ts"] - t0)) < 1e-6 and t.dur[i] == float(e.get("dur", 0))
        assert (t.pid[i], t.tid[i]) == (e["pid"], e["tid"])
        assert (t.stream[i], t.correlation[i], t.external_id[i], t.device[i]) == (
            a.get("stream", -1), a.get("correlation", -1), a.get("External id", -1), a.get("device", -1))
        if KEPT[e["cat"]] == Cat.KERNEL:
            assert t.grid_blocks[i] == math.prod(a["grid"])
            assert t.block_threads[i] == math.prod(a["block"])
            assert t.blocks_per_sm[i] == float(a["blocks per SM"])
            assert t.occupancy_pct[i] == float(a["est. achieved occupancy %"])
            assert (t.registers[i], t.shared_memory[i]) == (a["registers per thread"], a["shared memory"])
