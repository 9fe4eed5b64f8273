"""`speedtrace report` must not import the heavy libraries (architecture.md "Start-up matters")."""

import json
import subprocess
import sys

HEAVY = {"torch", "pandas", "plotly", "scipy", "hta"}

TRACE = {
    "schemaVersion": 1,
    "distributedInfo": {"rank": 0, "world_size": 1},
    "traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1, "ts": 0, "dur": 50},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 2, "dur": 2,
         "args": {"correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 10, "dur": 20,
         "args": {"device": 0, "stream": 7, "correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce", "pid": 0, "tid": 20, "ts": 20,
         "dur": 20, "args": {"device": 0, "stream": 20}},
    ],
}


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` lines: 'import time: self | cumulative | name'."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_report_imports_no_heavy_library(tmp_path):
    path = tmp_path / "rank-0.trace.json"
    path.write_text(json.dumps(TRACE))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "speedtrace", "report", "--format",
                           "json", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ranks"][0]["totals"]["comm_kernel_count"] == 1
    modules = imported_modules(proc.stderr)
    # the report path really ran (so an empty list below means something)
    assert {"speedtrace.analysis.report", "speedtrace.analysis.metrics", "speedtrace.analysis.load"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == []
