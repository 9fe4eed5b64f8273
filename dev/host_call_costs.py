"""Host time per call of the ops a compiled step makes most often, on the GPU machine.

Operands are tiny (64×64 bf16), so that the host, not the GPU, is timed: 5 × 400 back-to-back
calls, median per call. Measured without a profiler, with each BLAS library chosen explicitly, and
under CPU+CUDA profilers (plain, and with external correlation off) and a CUDA-only one: what the
profiler adds to each call is what full mode adds to a step's thousands of them.

    source dev/gpu_shim.sh; python -P dev/host_call_costs.py
"""

import statistics
import time

import torch


def host_us(fn, n: int = 400) -> float:
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    torch.cuda.synchronize()
    return statistics.median(runs)


def main() -> None:
    dev, bf16 = "cuda", torch.bfloat16
    a, b, out = (torch.randn(64, 64, device=dev, dtype=bf16) for _ in range(3))
    big = torch.empty(16384, 3072, device=dev, dtype=bf16)
    calls = {
        "mm(out=)": lambda: torch.mm(a, b, out=out),
        "mm": lambda: torch.mm(a, b),
        "empty_strided": lambda: torch.empty_strided((16384, 768), (768, 1), device=dev, dtype=bf16),
        "add_": lambda: out.add_(a),
        "as_strided": lambda: torch.as_strided(big, (16384, 768), (768, 1)),
    }
    print("torch's default BLAS library:", torch.backends.cuda.preferred_blas_library())
    rows = []
    default = torch.backends.cuda.preferred_blas_library()
    for lib in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(lib)
        rows.append((f"mm(out=) [{lib}]", host_us(calls["mm(out=)"])))
    torch.backends.cuda.preferred_blas_library(default)
    rows += [(name, host_us(fn)) for name, fn in calls.items()]
    cpu_cuda = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    profilers = {
        "cpu+cuda": dict(activities=cpu_cuda),
        "cpu+cuda, no external correlation": dict(
            activities=cpu_cuda,
            experimental_config=torch._C._profiler._ExperimentalConfig(disable_external_correlation=True)),
        "cuda only": dict(activities=[torch.profiler.ProfilerActivity.CUDA]),
    }
    for label, kwargs in profilers.items():
        with torch.profiler.profile(**kwargs):
            rows += [(f"{name} [{label}]", host_us(fn, n=200)) for name, fn in calls.items()]
    print(f"{'call':48s} host µs per call")
    for name, us in rows:
        print(f"{name:48s} {us:8.2f}")


if __name__ == "__main__":
    main()
