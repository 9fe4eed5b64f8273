"""Shared by the tests/test_trust_*.py files: a real trace to mutate, the CLI run in-process,
and checks that do not go through speedtrace's own loader.

The real trace is the bundled h200-speedrun sample (one profiler step of the record-233 trainer
on an H200: 5,261 kernels, 530 memsets, 37 memcpys, 10,518 CPU ops).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import math
from pathlib import Path

from speedtrace import cli

SAMPLE = Path(cli.__file__).resolve().parent / "samples" / "h200-speedrun" / "rank-0.trace.json.gz"
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


@functools.lru_cache(maxsize=1)
def _parsed() -> dict:
    return json.loads(gzip.decompress(SAMPLE.read_bytes()))


def real_trace() -> dict:
    """A fresh copy of the sample: its own top-level dict and event list (events are shared
    dicts: replace an event with a changed copy, never change one in place)."""
    obj = _parsed()
    return dict(obj, traceEvents=list(obj["traceEvents"]))


def gpu_rows(events: list) -> list[int]:
    """Indices of the GPU activity events (kernel, memcpy, memset) in file order."""
    return [i for i, e in enumerate(events) if isinstance(e, dict) and e.get("ph") == "X"
            and e.get("cat") in GPU_CATS]


def first_kernel(events: list) -> int:
    """Index of the kernel that starts first (the GPU window's left end in the sample)."""
    rows = [i for i in gpu_rows(events) if events[i]["cat"] == "kernel"]
    return min(rows, key=lambda i: events[i]["ts"])


def last_ending(events: list) -> int:
    """Index of the GPU event that ends last (the GPU window's right end)."""
    return max(gpu_rows(events), key=lambda i: events[i]["ts"] + events[i]["dur"])


def gpu_window(events: list, skip=()) -> tuple[float, float]:
    """(first start, last end) in µs over the GPU events, leaving out the indices in ``skip``;
    plain Python over the JSON, independent of the loader."""
    lo, hi = math.inf, -math.inf
    for i in gpu_rows(events):
        if i in skip:
            continue
        e = events[i]
        lo, hi = min(lo, e["ts"]), max(hi, e["ts"] + e["dur"])
    return lo, hi


def write_trace(path: Path, obj: dict, literals: dict[str, str] | None = None) -> Path:
    """Write ``obj`` as JSON; each ``"placeholder"`` string in ``literals`` is then replaced by
    its raw JSON text (for values json.dumps cannot write, such as 1e999)."""
    text = json.dumps(obj)
    for placeholder, raw in (literals or {}).items():
        text = text.replace(json.dumps(placeholder), raw)
    path.write_text(text)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``speedtrace.cli.main(argv)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def report_json(path) -> tuple[int, dict | None, str]:
    """`speedtrace report PATH --format json` in-process: (exit status, report or None, stderr)."""
    rc, out, err = run_cli("report", path, "--format", "json")
    return rc, (json.loads(out) if rc == 0 else None), err


def numbers(obj, where="$"):
    """Every number (not bool) in a decoded JSON value, as (where, value)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield where, obj


def assert_sane(rep: dict) -> None:
    """Every number finite and >= 0; every reported interval inside its device's span."""
    for where, x in numbers(rep):
        assert math.isfinite(x) and x >= 0, (where, x)
    for entry in rep["ranks"]:
        span = entry["totals"]["span_us"]
        for key in ("busy_us", "idle_us", "compute_us", "comm_us", "memory_us"):
            assert entry["totals"][key] <= span + 1e-6, (key, entry["totals"][key], span)
        for gap in entry["gaps"]:
            assert gap["start_us"] + gap["dur_us"] <= span + 1e-6, gap


def count_warnings(rep: dict, err: str, text: str) -> tuple[int, int]:
    """How many report warnings, and how many stderr lines, contain ``text``."""
    return (sum(text in w for w in rep["warnings"]),
            sum(text in line for line in err.splitlines()))
