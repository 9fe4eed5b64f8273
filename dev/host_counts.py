"""Per-step host work in one trace: matmul calls, launches, tiny GEMM kernels and range times.

For a full-mode trace (CPU+CUDA activities) of the bundled trainer: how many ``aten::mm`` calls
each profiler step made and their host time, its kernel launches and ``cudaMemsetAsync`` calls,
how many of its kernels were the small CUTLASS/cuBLAS GEMMs that 12-wide products get, the GPU's
kernel time, and the host time of the trainer's ``data``, ``forward``, ``backward`` and
``optimizer`` ranges. Prints the median over the steps and every step's value.

    python dev/host_counts.py TRACE.json.gz
"""

import collections
import gzip
import json
import statistics
import sys

LAUNCHES = ("cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernel", "cudaLaunchKernelExC")
TINY_GEMMS = ("cutlass", "dot_kernel", "gemv")


def step_rows(path: str) -> dict[str, list[float]]:
    with gzip.open(path) if path.endswith(".gz") else open(path) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    steps = sorted((e for e in events if e["name"].startswith("ProfilerStep") and e.get("cat") == "user_annotation"),
                   key=lambda e: e["ts"])
    rows = collections.defaultdict(list)
    for step in steps:
        start, end = step["ts"], step["ts"] + step["dur"]
        inside = [e for e in events if start <= e["ts"] < end]
        calls = collections.Counter(e["name"] for e in inside if e.get("cat") in ("cpu_op", "cuda_runtime", "cuda_driver"))
        kernels = [e for e in inside if e.get("cat") == "kernel"]
        rows["step ms"].append(step["dur"] / 1e3)
        rows["aten::mm"].append(calls["aten::mm"])
        rows["aten::mm host ms"].append(sum(e["dur"] for e in inside if e["name"] == "aten::mm") / 1e3)
        rows["launches"].append(sum(calls[name] for name in LAUNCHES))
        rows["memsets"].append(calls["cudaMemsetAsync"])
        rows["kernels"].append(len(kernels))
        rows["tiny gemm kernels"].append(sum(any(t in e["name"] for t in TINY_GEMMS) for e in kernels))
        rows["gpu kernel ms"].append(sum(e["dur"] for e in kernels) / 1e3)
        for name in ("data", "forward", "backward", "optimizer"):
            rows[f"{name} host ms"].append(
                sum(e["dur"] for e in inside if e["name"] == name and e.get("cat") == "user_annotation") / 1e3)
    return rows


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    for key, values in step_rows(sys.argv[1]).items():
        print(f"{key:22s} median {statistics.median(values):9.1f}   {[round(v, 1) for v in values]}")


if __name__ == "__main__":
    main()
