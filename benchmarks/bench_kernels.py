"""Time each speedtrace kernel against its PyTorch reference, eager and compiled, on one GPU.

For every kernel at the trainer's shape: the median GPU time of the Triton kernel, of the PyTorch
reference run eagerly and of the reference under torch.compile(fullgraph=True); the kernel's GB/s or
TFLOP/s and its percent of the card's ceiling (a measured large device-to-device copy for
memory-bound kernels, a measured large bf16 matmul for the GEMMs); and the kernel's grid in blocks
per SM.

How each is timed (the "timing" field: kernel/eager/compiled):
- our kernels: replays of a CUDA graph of the call (triton.testing.do_bench_cudagraph; no L2 flush
  between replays), "graph". Back-to-back eager calls of a kernel of tens of µs are close to
  host-bound (custom-op dispatcher + Triton launcher), so their times swing with the host; in the
  trainer these launches sit in compiled graphs, and their host cost is measured by the dilation.
  A call that cannot be captured (e.g. a CPU scalar copied to the GPU) falls back to the stream.
- the references and the ceilings: triton.testing.do_bench on the stream (L2 flushed), "stream":
  under graph capture cuBLAS picks other (slower) algorithms and the device-to-device copy runs
  well below its stream bandwidth (benchmarks/RESULTS.md).

Usage:

    python -P benchmarks/bench_kernels.py [--json PATH]

The same kernels' correctness at these shapes: ``pytest -m gpu tests/gpu/test_kernels_gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_kernels():
    """speedtrace.kernels, installed or straight from this checkout (kernels/ as the subpackage)."""
    try:
        import speedtrace.kernels as K
    except ModuleNotFoundError:
        sys.path.insert(0, str(ROOT))
        import speedtrace
        speedtrace.__path__.append(str(ROOT))
        import speedtrace.kernels as K
    return K


def graph_ms(fn) -> tuple[float, str]:
    """(median ms per call, "graph" or "stream"): replayed from a CUDA graph where fn can be captured."""
    import torch
    from triton.testing import do_bench_cudagraph
    try:
        return float(do_bench_cudagraph(fn, rep=100, return_mode="median")), "graph"
    except Exception:  # not capturable: time it on the stream instead
        torch.cuda.synchronize()
        return median_ms(fn), "stream"


def median_ms(fn) -> float:
    """Median ms per call on the stream (L2 flushed before each)."""
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def copy_bandwidth_gbs() -> float:
    """Bytes read plus written per second by a 2 GiB device-to-device copy."""
    import torch
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() / ms / 1e6


def matmul_tflops() -> float:
    """bf16 rate of an 8192³ matmul."""
    import torch
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    ms = median_ms(lambda: a @ b)
    return 2 * 8192 ** 3 / ms / 1e9


def blocks_per_sm(kernel_name: str) -> float | None:
    import torch

    from speedtrace.kernels._dispatch import last_launch
    grid = last_launch(kernel_name)
    if grid is None:
        return None
    return math.prod(grid) / torch.cuda.get_device_properties(0).multi_processor_count


def _compiled(fn):
    import torch
    return torch.compile(fn, fullgraph=True)


# The trainer's shapes (a dry run on CPU may shrink them).
SHAPES = {
    "transpose": (768, 50304),
    "banks": (("attn bank", (40, 768, 768)), ("mlp bank", (24, 3072, 768))),
    "mlp": (16384, 768, 3072),
    "cross_entropy": (16384, 50304),
}


def cases(dev: str = "cuda"):
    """(name, unit, work, triton fn, reference fn, compiled reference fn, kernel, args) per case.

    work is bytes moved (unit "GB/s") or floating-point operations (unit "TFLOP/s").
    """
    import torch

    K = import_kernels()
    from speedtrace.kernels import ops, triton_mlp
    from speedtrace.kernels import reference as R

    bf16 = torch.bfloat16
    out = []

    m, n = SHAPES["transpose"]
    src = torch.randn(m, n, dtype=bf16, device=dev)
    dst = torch.empty(n, m, dtype=bf16, device=dev)
    elems = m * n * 2
    out.append((f"transpose_copy {m}x{n}", "GB/s", 2 * elems, lambda: K.transpose_copy(src, dst),
                lambda: R.transpose_copy(src, dst), _compiled(R.transpose_copy), "transpose_copy_kernel",
                (src, dst)))
    # transpose_add reads src and dst and writes dst: three passes.
    out.append((f"transpose_add {m}x{n}", "GB/s", 3 * elems, lambda: K.transpose_add(src, dst),
                lambda: R.transpose_add(src, dst), _compiled(R.transpose_add), "transpose_add_kernel",
                (src, dst)))

    mu = torch.tensor(0.95)
    for label, (b, r, c) in SHAPES["banks"]:
        a = torch.randn(b, r, c, dtype=bf16, device=dev) / math.sqrt(c)
        if r <= c:
            gram = torch.empty(b, r, r, dtype=bf16, device=dev)
            out.append((f"xxt {label} {b}x{r}x{c}", "TFLOP/s", 2 * b * r * r * c, lambda a=a, g=gram: K.xxt(a, g),
                        lambda a=a, g=gram: torch.bmm(a, a.mT, out=g), _compiled(lambda a: torch.bmm(a, a.mT)),
                        "xxt_kernel", (a,)))
        else:
            gram = torch.empty(b, c, c, dtype=bf16, device=dev)
            out.append((f"xtx {label} {b}x{r}x{c}", "TFLOP/s", 2 * b * c * c * r, lambda a=a, g=gram: K.xtx(a, g),
                        lambda a=a, g=gram: torch.bmm(a.mT, a, out=g), _compiled(lambda a: torch.bmm(a.mT, a)),
                        "xtx_kernel", (a,)))
        side = min(r, c)
        s = (K.xxt if r <= c else K.xtx)(a)      # symmetric, as in Polar Express
        poly = torch.empty_like(s)
        out.append((f"ba_plus_caa {label} {b}x{side}x{side}", "TFLOP/s", 2 * b * side ** 3,
                    lambda s=s, p=poly: K.ba_plus_caa(s, 0.42, -1.7, p),
                    lambda s=s, p=poly: R.ba_plus_caa(s, 0.42, -1.7, p),
                    _compiled(lambda s: 0.42 * torch.bmm(s, s.mT) - 1.7 * s), "ba_plus_caa_kernel", (s,)))
        grad = torch.randn(b, r, c, device=dev)
        buf = torch.zeros_like(grad)
        flops = 5 * b * (2 * r * c * side + 2 * side ** 3 + 2 * r * c * side)
        out.append((f"polar_express {label} {b}x{r}x{c}", "TFLOP/s", flops,
                    lambda g=grad, bu=buf: K.polar_express(g, bu, mu),
                    lambda g=grad, bu=buf: R.polar_express(g, bu, mu),
                    _compiled(R.polar_express), "ba_plus_caa_kernel", (grad, buf, mu)))

    tokens, dim, hidden = SHAPES["mlp"]
    x = torch.randn(tokens, dim, dtype=bf16, device=dev, requires_grad=True)
    w1 = (torch.randn(hidden, dim, device=dev) * 0.02).to(bf16).requires_grad_()
    w2 = (torch.randn(hidden, dim, device=dev) * 0.02).to(bf16).requires_grad_()
    g = torch.randn(tokens, dim, dtype=bf16, device=dev)

    def fwd_bwd(f):
        return lambda *_: torch.autograd.grad(f(x, w1, w2), (x, w1, w2), g)

    ref_mlp = _compiled(R.linear_relu_square)
    out.append((f"linear_relu_square fwd+bwd {tokens}x{dim}x{hidden}", "TFLOP/s", 6 * 2 * tokens * dim * hidden,
                fwd_bwd(K.linear_relu_square), fwd_bwd(R.linear_relu_square), fwd_bwd(ref_mlp),
                f"linear_relu_square_{triton_mlp.default_path(x, w1)}_kernel", ()))

    rows, vocab = SHAPES["cross_entropy"]
    logits = (torch.randn(rows, vocab, device=dev) * 6).to(bf16)
    targets = torch.randint(0, vocab, (rows,), device=dev)
    weights = torch.tensor([1.0, 0.5, 0.25], device=dev)
    losses, lse = ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5)
    gl = torch.rand(rows, device=dev)
    out.append((f"softcapped_ce fwd {rows}x{vocab}", "GB/s", 2 * rows * vocab,
                lambda: ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5),
                lambda: R.softcapped_ce_forward(logits, targets, weights),
                _compiled(R.softcapped_ce_forward), "softcapped_ce_fwd_kernel", (logits, targets, weights)))
    out.append((f"softcapped_ce bwd {rows}x{vocab}", "GB/s", 3 * rows * vocab,
                lambda: ops.softcapped_ce_bwd_op(gl, logits, lse, targets, weights, 1e-3, 23.0, 5.0, 7.5),
                lambda: R.softcapped_ce_backward(gl, logits, lse, targets, weights, 1e-3),
                _compiled(R.softcapped_ce_backward), "softcapped_ce_bwd_kernel",
                (gl, logits, lse, targets, weights, 1e-3)))
    return out


def run(log=print) -> dict:
    """Measure the ceilings and every case; returns the results as a dict (also printed)."""
    import torch
    import triton

    torch.manual_seed(0)
    bandwidth, rate = copy_bandwidth_gbs(), matmul_tflops()
    log(f"ceilings: copy {bandwidth:.0f} GB/s, bf16 matmul {rate:.0f} TFLOP/s")
    log(HEADER)
    rows = []
    for name, unit, work, fn, ref, ref_c, kernel, args in cases():
        fn()
        t, how = graph_ms(fn)
        t_ref = median_ms(ref)
        try:
            t_ref_c = median_ms(lambda f=ref_c, a=args: f(*a))
        except Exception as exc:  # a reference that does not compile is reported, not fatal
            log(f"{name}: compiled reference failed: {type(exc).__name__}: {str(exc)[:200]}")
            t_ref_c = float("nan")
        speed = work / t / (1e6 if unit == "GB/s" else 1e9)
        ceiling = bandwidth if unit == "GB/s" else rate
        row = dict(kernel=name, ms=t, ref_eager_ms=t_ref, ref_compiled_ms=t_ref_c, unit=unit, rate=speed,
                   pct_of_ceiling=100 * speed / ceiling, vs_ref_eager=t / t_ref,
                   vs_ref_compiled=t / t_ref_c, blocks_per_sm=blocks_per_sm(kernel),
                   timing=f"{how}/stream/stream")
        rows.append(row)
        log(format_row(row))
    return dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                copy_gbs=bandwidth, matmul_tflops=rate, kernels=rows)


HEADER = (f"{'kernel':52s} {'µs':>8s} {'ref µs':>8s} {'cmp µs':>8s} {'x ref':>6s} {'x cmp':>6s} "
          f"{'rate':>13s} {'%ceil':>6s} {'blk/SM':>7s}  timing")


def format_row(row: dict) -> str:
    bps = "-" if row["blocks_per_sm"] is None else f"{row['blocks_per_sm']:.1f}"
    return (f"{row['kernel']:52s} {1e3 * row['ms']:8.1f} {1e3 * row['ref_eager_ms']:8.1f} "
            f"{1e3 * row['ref_compiled_ms']:8.1f} {row['vs_ref_eager']:6.2f} {row['vs_ref_compiled']:6.2f} "
            f"{row['rate']:7.0f} {row['unit']:<7s}"
            f"{row['pct_of_ceiling']:6.1f} {bps:>7s}  {row.get('timing', '')}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("bench_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    import_kernels()
    results = run()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
