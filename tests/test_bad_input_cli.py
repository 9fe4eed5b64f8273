"""`speedtrace report` on bad input, run as a user would (a subprocess): exit 2, one stderr line
naming the file, nothing on stdout, no traceback. Warnings-only input exits 0 and says why."""

import gzip
import json
import os
import subprocess
import sys

import pytest

GOOD = {
    "schemaVersion": 1,
    "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 1},
    "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 1000, "dur": 10},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 1002,
         "dur": 2, "args": {"correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 1010, "dur": 20,
         "args": {"device": 0, "stream": 7, "correlation": 1}},
    ],
}


def run_report(*args, fmt="text"):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "speedtrace", "report", *map(str, args), "--format", fmt],
                          capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(rc, out, err, names):
    assert rc == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert str(names) in lines[0]


def good_text() -> str:
    return json.dumps(GOOD, indent=1)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(good_text().encode())
    path = tmp_path / "rank-0.trace.json.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*run_report(path), path)


def test_half_a_json_file(tmp_path):
    text = good_text()
    path = tmp_path / "rank-0.trace.json"
    path.write_text(text[: len(text) // 2])
    assert_one_line_error(*run_report(path), path)


def test_random_bytes(tmp_path):
    path = tmp_path / "trace.json"
    path.write_bytes(bytes(range(256)) * 40)
    assert_one_line_error(*run_report(path), path)


def test_random_bytes_named_gz(tmp_path):
    path = tmp_path / "trace.json.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 40)
    assert_one_line_error(*run_report(path), path)


def test_non_trace_json_as_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"lr": 0.1, "steps": [1, 2]}))
    assert_one_line_error(*run_report(path), path)


def test_empty_directory(tmp_path):
    assert_one_line_error(*run_report(tmp_path), tmp_path)


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "rank-0.trace.json"
    assert_one_line_error(*run_report(path), path)


def test_duplicate_ranks(tmp_path):
    (tmp_path / "a.json").write_text(good_text())
    (tmp_path / "b.json").write_text(good_text())
    rc, out, err = run_report(tmp_path)
    assert_one_line_error(rc, out, err, tmp_path / "a.json")
    assert str(tmp_path / "b.json") in err


@pytest.mark.parametrize("fmt", ["json", "md"])
def test_errors_are_the_same_in_every_format(tmp_path, fmt):
    path = tmp_path / "rank-0.trace.json"
    path.write_text(good_text()[:100])
    assert_one_line_error(*run_report(path, fmt=fmt), path)


# ---------------------------------------------------------------------------- warnings, exit 0


def test_trace_without_gpu_events(tmp_path):
    trace = dict(GOOD, traceEvents=GOOD["traceEvents"][:2])
    path = tmp_path / "rank-0.trace.json"
    path.write_text(json.dumps(trace))
    rc, out, err = run_report(path, fmt="json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["ranks"] == []
    assert any(str(path) in w and "GPU" in w for w in rep["warnings"])
    rc, out, err = run_report(path)
    assert rc == 0 and "no GPU activity" in out and "Traceback" not in err


def test_single_file_without_rank(tmp_path):
    trace = {k: v for k, v in GOOD.items() if k != "distributedInfo"}
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    rc, out, err = run_report(path, fmt="json")
    assert rc == 0, err
    rep = json.loads(out)
    assert [e["rank"] for e in rep["ranks"]] == [0]
    assert any(str(path) in w and "rank" in w for w in rep["warnings"])
    assert rep["ranks"][0]["totals"]["span_us"] == 20


def test_missing_ranks_of_a_world(tmp_path):
    for r in (0, 2):
        trace = dict(GOOD, distributedInfo={"backend": "nccl", "rank": r, "world_size": 4})
        (tmp_path / f"rank-{r}.trace.json").write_text(json.dumps(trace))
    rc, out, err = run_report(tmp_path)
    assert rc == 0, err
    warning_lines = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning_lines and any("1" in w and "3" in w for w in warning_lines)
