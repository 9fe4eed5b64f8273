"""Does the trainer's code compile and stay correct under Inductor's C++ wrapper on this torch?

The C++ wrapper would launch a compiled graph's kernels without Python (host time per launch is
what makes the speedrun step host-bound under a profiler). This compiles the MLP op and the FP8
head + softcapped cross-entropy, forward and backward, with and without ``cpp_wrapper`` and
compares each with the eager result; each case runs in its own process, so that a crash or an
illegal memory access names its case.

    python -P dev/check_cpp_wrapper_gpu.py            # every case, one process each
    python -P dev/check_cpp_wrapper_gpu.py mlp cpp    # one case in this process
"""

import re
import subprocess
import sys

import torch

CASES = [(op, wrapper) for op in ("mlp", "ce") for wrapper in ("python", "cpp")]
# torch's glog lines (W1129 04:03:33.623000 ...) and traceback frames are not the case's result.
NOISE = re.compile(r"^([WIE]\d{4} |\s|$)")


def options(wrapper: str) -> dict:
    # Kernels compiled when the graph first runs: torch 2.11's compile-time autotuning block
    # otherwise fails on the cross-entropy backward too (same assertion).
    return {"cpp_wrapper": True, "triton.autotune_at_compile_time": False} if wrapper == "cpp" else {}


def inputs(op: str):
    torch.manual_seed(0)
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4096, 768, **bf16)
    if op == "mlp":
        return x, (torch.randn(3072, 768, **bf16) * 0.02), (torch.randn(3072, 768, **bf16) * 0.02)
    return x, (torch.randn(768, 50304, **bf16) * 0.02)


def forward(op: str):
    from speedtrace import kernels

    if op == "mlp":
        return lambda x, w1, w2: kernels.linear_relu_square(x, w1, w2).float().square().sum()
    targets = torch.randint(0, 50304, (4096,), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    mtp = torch.tensor([1.0, 0.5], device="cuda")
    return lambda x, w: kernels.softcapped_cross_entropy(x, targets, mtp, w, 100 / 448, 1.6 / 448, 0.75 / 448).sum()


def loss_and_grads(fn, tensors):
    leaves = [t.clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [t.grad for t in leaves]


def run_case(op: str, wrapper: str) -> None:
    fn = forward(op)
    tensors = inputs(op)
    ref_loss, ref_grads = loss_and_grads(fn, tensors)
    compiled = torch.compile(fn, fullgraph=True, dynamic=False, options=options(wrapper))
    loss, grads = loss_and_grads(compiled, tensors)
    torch.cuda.synchronize()
    errors = ", ".join(f"{(g.float() - r.float()).abs().max().item():.3g}" for g, r in zip(grads, ref_grads))
    print(f"{op} {wrapper}: loss error {abs(loss.item() - ref_loss.item()):.3g}; max gradient errors {errors}")


def main() -> int:
    if len(sys.argv) == 3:
        run_case(*sys.argv[1:])
        return 0
    print(f"torch {torch.__version__}; compiled against eager, same kernels")
    for op, wrapper in CASES:
        proc = subprocess.run([sys.executable, "-P", __file__, op, wrapper], capture_output=True, text=True)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if not NOISE.match(line)] or ["(no output)"]
        print(lines[-1] if proc.returncode == 0 else f"{op} {wrapper}: failed ({proc.returncode}): {lines[-1][:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
