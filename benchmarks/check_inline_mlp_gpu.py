"""The MLP ops opaque (custom_op) vs inline (triton_op + wrap_triton) under torch.compile, on a GPU.

    python benchmarks/check_inline_mlp_gpu.py

Runs itself once per value of SPEEDTRACE_INLINE_TRITON (read at import, hence a child process
each). Every child compiles 11 residual MLP layers (x (16384, 768) bf16, w1/w2 (3072, 768)) with
torch.compile(fullgraph=True), runs forward + backward, checks the loss and every gradient against
float64 (error at most twice the bf16 reference's, plus 1e-6) and times:
- GPU ms per iteration: CUDA events around 50 back-to-back iterations;
- host ms per iteration: time.perf_counter around each call, without synchronising, averaged over
  50 iterations. The GPU is drained before each one (not timed), because back-to-back calls
  would soon fill the launch queue and the host time would become the GPU's.
It also counts, in Inductor's generated code, calls of the opaque ops and launches of our kernels.
If the inline child fails (e.g. the device-descriptor kernel), it is re-run on the pointer kernel.
Exit status 0 when every row ran and passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

LAYERS, TOKENS, DIM, HIDDEN = 11, 16384, 768, 3072
WARMUP, ITERS = 5, 50


def child(force_pointer: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from torch._inductor.utils import run_and_get_code

    import speedtrace.kernels as K
    from speedtrace.kernels import ops, triton_mlp
    from speedtrace.kernels import reference as R

    if force_pointer:
        triton_mlp.inline_path = lambda a, b: "pointer"
    torch.manual_seed(0)
    dev = "cuda"
    bound = (3 / DIM) ** 0.5 * 0.5
    x = torch.randn(TOKENS, DIM, device=dev, dtype=torch.bfloat16, requires_grad=True)
    ws = [((torch.rand(HIDDEN, DIM, device=dev) * 2 - 1) * bound).to(torch.bfloat16).requires_grad_()
          for _ in range(2 * LAYERS)]

    def model(mlp, x, *ws):
        h = x
        for i in range(LAYERS):
            h = h + mlp(F.rms_norm(h, (DIM,)), ws[2 * i], ws[2 * i + 1])
        return h.float().square().mean()

    def step(f, x, ws):
        loss = f(x, *ws)
        return [loss.detach(), *torch.autograd.grad(loss, [x, *ws])]

    compiled = torch.compile(lambda x, *ws: model(K.linear_relu_square, x, *ws), fullgraph=True)
    t0 = time.perf_counter()
    got, codes = run_and_get_code(step, compiled, x, ws)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    # Statements only: Inductor also names the source ops in comments.
    code = "\n".join(ln for c in codes for ln in c.splitlines() if not ln.lstrip().startswith("#"))
    counts = {"opaque_op_calls": len(re.findall(r"speedtrace\.(linear_relu_square_fwd|relu_square_bwd)\.default\(", code)),
              "kernel_launches": len(re.findall(r"linear_relu_square_\w*kernel\w*\.run\(", code))}
    backend = K.last_backend()

    ref = step(lambda x, *ws: model(R.linear_relu_square, x, *ws), x, ws)
    x64 = x.detach().double().requires_grad_()
    ws64 = [w.detach().double().requires_grad_() for w in ws]
    exact = step(lambda x, *ws: model(R.linear_relu_square, x, *ws), x64, ws64)
    worst = 0.0
    ok = True
    for g, r, e in zip(got, ref, exact):
        err = float((g.double() - e).abs().max())
        ref_err = float((r.double() - e).abs().max())
        ok &= err <= 2 * ref_err + 1e-6
        worst = max(worst, err / (ref_err + 1e-12))
    del ref, exact, x64, ws64

    for _ in range(WARMUP):
        step(compiled, x, ws)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(ITERS):
        step(compiled, x, ws)
    end.record()
    torch.cuda.synchronize()
    gpu_ms = start.elapsed_time(end) / ITERS

    host = 0.0
    for _ in range(ITERS):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step(compiled, x, ws)
        host += time.perf_counter() - t
    torch.cuda.synchronize()
    return dict(inline=ops.INLINE_TRITON, pointer=force_pointer, backend=backend, ok=bool(ok),
                worst_error_vs_ref=round(worst, 3), compile_s=round(compile_s, 1), gpu_ms=round(gpu_ms, 3),
                host_ms=round(host / ITERS * 1e3, 3), **counts)


DEADLINE = time.monotonic() + 170   # the whole check stays under three minutes


def run_child(inline: bool, pointer: bool = False) -> dict:
    env = {**os.environ, "SPEEDTRACE_INLINE_TRITON": "1" if inline else "0"}
    args = [sys.executable, __file__, "--child"] + (["--pointer"] if pointer else [])
    left = DEADLINE - time.monotonic()
    if left < 20:
        return dict(inline=inline, pointer=pointer, failed=True)
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"child inline={inline} pointer={pointer}: out of time\n")
        return dict(inline=inline, pointer=pointer, failed=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        return dict(inline=inline, pointer=pointer, failed=True)
    return json.loads(lines[-1])


def main() -> int:
    if "--child" in sys.argv:
        print(json.dumps(child("--pointer" in sys.argv)))
        return 0
    rows = [run_child(False), run_child(True)]
    if rows[1].get("failed"):
        rows.append(run_child(True, pointer=True))
    cols = ("backend", "ok", "worst_error_vs_ref", "compile_s", "gpu_ms", "host_ms", "opaque_op_calls",
            "kernel_launches")
    print(f"{LAYERS} MLP layers fwd+bwd, x ({TOKENS}, {DIM}) bf16, w1/w2 ({HIDDEN}, {DIM}); "
          f"mean of {ITERS} iterations")
    print(f"{'SPEEDTRACE_INLINE_TRITON':26s}" + "".join(f"{c:>20s}" for c in cols))
    for r in rows:
        name = f"{int(r['inline'])}{' (pointer kernel)' if r['pointer'] else ''}"
        print(f"{name:26s}" + "".join(f"{str(r.get(c, 'FAILED')):>20s}" for c in cols))
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
