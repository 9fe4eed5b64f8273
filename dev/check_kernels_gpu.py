"""One run on the GPU machine: the kernels' correctness at the trainer's shapes, then their timings.

    python dev/check_kernels_gpu.py        # results JSON to $OUT/kernels_gpu.json if $OUT is set

1. Every kernel at the trainer's shapes against float64 (tests/kernel_checks.py), eagerly and
   inside torch.compile(fullgraph=True) as the trainer calls them.
2. The timing table of benchmarks/bench_kernels.py (ceilings measured on the card).
3. A short summary last: failed checks and the speed targets of the kernels' issue.
Exit status 0 when every check passed, 1 otherwise (the targets are reported, not enforced).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
import bench_kernels  # noqa: E402  (the timing harness)

# Speed targets: (kernel name prefix, measure, limit, how it reads)
TARGETS = (
    ("transpose_copy", "pct_of_ceiling", 85.0, ">= 85% of copy bandwidth"),
    ("transpose_add", "pct_of_ceiling", 85.0, ">= 85% of copy bandwidth (3 passes)"),
    ("xxt", "vs_ref_eager", 0.8, "<= 0.8x torch.bmm(a, a.mT)"),
    ("xtx", "vs_ref_eager", 0.8, "<= 0.8x torch.bmm(a.mT, a)"),
    ("polar_express", "vs_ref_compiled", 1.0, "<= 1.0x compiled composition"),
)


def target_lines(kernels: list[dict]) -> list[str]:
    lines = []
    for prefix, key, limit, text in TARGETS:
        for row in kernels:
            if row["kernel"].startswith(prefix):
                value = row[key]
                met = value >= limit if key == "pct_of_ceiling" else value <= limit
                lines.append(f"{'MET ' if met else 'MISS'} {row['kernel']:48s} {value:8.2f}  (target {text})")
    return lines


def main() -> int:
    import torch
    if not torch.cuda.is_available():
        print("check_kernels_gpu: needs a CUDA device", file=sys.stderr)
        return 2
    bench_kernels.import_kernels()
    import kernel_checks as checks  # the tests' float64 checks (tests/ is on sys.path)
    import triton

    start = time.time()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    all_checks = []
    for compiled in (False, True):
        mode = "compiled" if compiled else "eager"
        t0 = time.time()
        torch.manual_seed(int(time.time()))
        for c in checks.trainer_shape_checks("cuda", compiled=compiled):
            row = {**c.as_dict(), "mode": mode}
            all_checks.append(row)
            print(f"{'ok  ' if c.ok else 'FAIL'} {mode:8s} {c.kernel:40s} {c.output:22s} {c.shape:16s} "
                  f"err {c.error:.3g} ref {c.ref_error:.3g} bound {c.bound:.3g} [{c.backend}]", flush=True)
        print(f"-- {mode} checks took {time.time() - t0:.0f} s", flush=True)
    results["checks"] = all_checks
    torch.cuda.empty_cache()
    t0 = time.time()
    timings = bench_kernels.run(log=lambda line: print(line, flush=True))
    print(f"-- timings took {time.time() - t0:.0f} s; total {time.time() - start:.0f} s")
    results.update(timings)

    failed = [c for c in all_checks if not c["ok"] or c["backend"] != "triton"]
    print("\n==== summary ====")
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"copy {timings['copy_gbs']:.0f} GB/s  bf16 mm {timings['matmul_tflops']:.0f} TFLOP/s")
    print(f"checks: {len(all_checks) - len(failed)}/{len(all_checks)} passed")
    for c in failed:
        print(f"  FAILED {c['mode']} {c['kernel']} {c['output']} {c['shape']} err {c['error']:.3g} "
              f"bound {c['bound']:.3g} backend {c['backend']}")
    print(bench_kernels.HEADER)
    for row in timings["kernels"]:
        print(bench_kernels.format_row(row))
    print("\n".join(target_lines(timings["kernels"])))
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "kernels_gpu.json"
        path.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {path}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
