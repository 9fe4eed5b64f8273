"""Odd files where traces are expected (issue #18): non-regular files, broken and looping links,
traces in subdirectories, and where a JSON error lies in a big file."""

import gzip
import json
import os
import subprocess
import sys
import threading

import msgspec
import pytest
from trust_traces import SAMPLE, run_cli

import speedtrace.analysis.decode as decode
from speedtrace.analysis.load import load
from speedtrace.errors import SpeedtraceError

GOOD = {
    "distributedInfo": {"rank": 0, "world_size": 1},
    "traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 1010, "dur": 20,
         "args": {"device": 0, "stream": 7}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 1040, "dur": 10,
         "args": {"device": 0, "stream": 7}},
    ],
}


def run_report_process(*args, timeout=60):
    """`speedtrace report` in a child process, so that a hang fails the test instead of
    hanging it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "speedtrace", "report", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(rc, out, err, *words):
    assert rc == 2, err
    assert out == "" and "Traceback" not in err
    (line,) = err.splitlines()
    for w in words:
        assert str(w) in line, line
    return line


# ---------------------------------------------------------------------------- non-regular files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_named_like_a_trace_is_refused_at_once(tmp_path):
    fifo = tmp_path / "rank-0.trace.json"
    os.mkfifo(fifo)
    one_line_error(*run_report_process(fifo, timeout=30), fifo, "not a regular file (a FIFO)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_read_directly_is_refused(tmp_path):
    # The decoder's own check (the one that cannot be raced): open without blocking, then fstat.
    fifo = tmp_path / "rank-0.trace.json"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            decode.read_rank_trace(fifo)
        except SpeedtraceError as e:
            outcome.append(str(e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert len(outcome) == 1 and "not a regular file (a FIFO)" in outcome[0], outcome


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_character_device_is_refused():
    one_line_error(*run_cli("report", "/dev/null"), "/dev/null", "a character device")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_in_a_directory_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "rank-0.trace.json").write_text(json.dumps(GOOD))
    os.mkfifo(tmp_path / "rank-1.trace.json")
    rc, out, err = run_report_process(tmp_path, "--format", "json", timeout=30)
    assert rc == 0, err
    warnings = json.loads(out)["warnings"]
    assert [w for w in warnings if "rank-1.trace.json" in w] == [
        f"{tmp_path / 'rank-1.trace.json'}: not a regular file (a FIFO); skipped"]


# ---------------------------------------------------------------------------- links


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_broken_and_looping_links_in_a_directory_are_named(tmp_path):
    (tmp_path / "rank-0.trace.json").write_text(json.dumps(GOOD))
    os.symlink(tmp_path / "gone.json", tmp_path / "rank-1.trace.json")
    os.symlink(tmp_path / "rank-2.trace.json", tmp_path / "rank-2.trace.json")  # itself
    os.symlink(tmp_path / "notes.txt", tmp_path / "notes.md")  # not named like a trace: ignored
    ts = load(tmp_path)
    assert [r.rank for r in ts.ranks] == [0]
    broken = [w for w in ts.warnings if "rank-1.trace.json" in w]
    loop = [w for w in ts.warnings if "rank-2.trace.json" in w]
    assert broken == [f"{tmp_path / 'rank-1.trace.json'}: broken symbolic link "
                      f"(to {tmp_path / 'gone.json'}); skipped"]
    assert loop == [f"{tmp_path / 'rank-2.trace.json'}: symbolic link loop; skipped"]
    assert not any("notes" in w for w in ts.warnings)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_a_link_to_a_trace_is_read(tmp_path):
    (tmp_path / "real.data").write_text(json.dumps(GOOD))
    os.symlink(tmp_path / "real.data", tmp_path / "rank-0.trace.json")
    ts = load(tmp_path)
    assert len(ts.ranks) == 1 and ts.warnings == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_broken_link_given_as_path(tmp_path):
    link = tmp_path / "rank-0.trace.json"
    os.symlink(tmp_path / "gone.json", link)
    one_line_error(*run_cli("report", link), link, "broken symbolic link")


# ---------------------------------------------------------------------------- subdirectories


def test_traces_in_subdirectories_are_named(tmp_path):
    (tmp_path / "rank-0.trace.json").write_text(json.dumps(GOOD))
    for sub in ("run-b", "run-a"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "rank-0.trace.json").write_text(json.dumps(GOOD))
    (tmp_path / "logs").mkdir()  # no traces in it: not named
    (tmp_path / "logs" / "train.txt").write_text("x")
    rc, out, err = run_cli("report", tmp_path, "--format", "json")
    assert rc == 0, err
    warnings = json.loads(out)["warnings"]
    assert warnings == [f"{tmp_path}: subdirectories run-a/, run-b/ hold trace files that are not "
                        "read (only the directory's own files are; give a subdirectory as PATH)"]


def test_only_subdirectories_hold_traces(tmp_path):
    (tmp_path / "run-a").mkdir()
    (tmp_path / "run-a" / "rank-0.trace.json").write_text(json.dumps(GOOD))
    one_line_error(*run_cli("report", tmp_path), tmp_path, "no trace files",
                   "subdirectories run-a/ hold some: give one as PATH")


# ---------------------------------------------------------------------------- error offsets


def broken_big_trace(tmp_path):
    """The sample's JSON (6.9 MB, about 26 decode chunks) with one character broken at about
    80% of the file; (path, the file's bytes, offset of the broken character)."""
    data = bytearray(gzip.decompress(SAMPLE.read_bytes()))
    at = data.index(b'"ph":"X"', len(data) * 4 // 5) + 5
    data[at] = ord("?")  # '"ph":?X"': an invalid character where a value starts
    path = tmp_path / "rank-0.trace.json"
    path.write_bytes(bytes(data))
    return path, bytes(data), at


def msgspec_offset(data: bytes) -> int:
    """Where msgspec, decoding the whole text at once, says the error is (the independent
    reference: no chunking involved)."""
    with pytest.raises(msgspec.DecodeError) as info:
        msgspec.json.decode(data)
    return int(decode._ERROR_BYTE.search(str(info.value)).group(1))


def test_json_error_deep_in_a_big_file_names_its_offset_in_the_file(tmp_path):
    path, data, at = broken_big_trace(tmp_path)
    assert len(data) > 20 * decode.CHUNK_BYTES
    whole = msgspec_offset(data)
    assert abs(whole - at) <= 1  # msgspec points at (or just before) the broken character
    rc, out, err = run_cli("report", path)
    line = one_line_error(rc, out, err, path, "not valid JSON")
    assert f"(byte {whole} of the file)" in line, line


def test_json_error_offset_in_a_gzip_file_is_in_the_decompressed_text(tmp_path):
    path, data, at = broken_big_trace(tmp_path)
    gz = tmp_path / "rank-0.trace.json.gz"
    gz.write_bytes(gzip.compress(data, compresslevel=1))
    rc, out, err = run_cli("report", gz)
    line = one_line_error(rc, out, err, gz, "not valid JSON")
    assert f"(byte {msgspec_offset(data)} of the decompressed JSON)" in line, line


def test_json_error_before_the_events_names_its_offset(tmp_path):
    text = '{"schemaVersion": 1, "deviceProperties": [{"id": 0,, }], "traceEvents": []}'
    path = tmp_path / "rank-0.trace.json"
    path.write_text(text)
    rc, out, err = run_cli("report", path)
    line = one_line_error(rc, out, err, path, "not valid JSON")
    assert f"(byte {text.index(',,') + 1} of the file)" in line, line
