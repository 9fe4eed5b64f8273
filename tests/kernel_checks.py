"""Correctness checks of the kernels against a float64 evaluation: helpers of the kernel tests.

The rule: an output's largest error against float64 must be at most twice the error of the
PyTorch reference run in the kernel's own dtype, plus 1e-6. Outputs are filled with NaN before
the call (a missed element shows up as an infinite error); ``transpose_add`` gets a random
destination that is a view into a larger tensor, whose other elements must stay untouched.
float8 e5m2 outputs must be within one e5m2 step of torch's cast of the float64 value.
Each check draws fresh random inputs and returns ``Check`` records; the callers assert on them
(CPU tests under the Triton interpreter at small shapes, tests/gpu at the trainer's shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import speedtrace.kernels as K
from speedtrace.kernels import reference as R

BF16 = torch.bfloat16
F64 = torch.float64


@dataclass
class Check:
    kernel: str
    output: str
    shape: str
    error: float        # max |kernel − float64| (e5m2: the largest distance in e5m2 steps)
    ref_error: float    # the same for the PyTorch reference in the kernel's dtype
    bound: float
    backend: str | None
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def max_error(out: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest |out − exact|, infinite where out is NaN or infinite and exact is not."""
    diff = (out.to(F64) - exact.to(F64)).abs()
    diff = torch.where(torch.isfinite(out.to(F64)) | ~torch.isfinite(exact.to(F64)),
                       diff.nan_to_num(nan=0.0), torch.full_like(diff, float("inf")))
    return float(diff.max()) if diff.numel() else 0.0


def e5m2_steps(out: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest distance, in representable e5m2 values, between two float8_e5m2 tensors."""
    def rank(t):
        bits = t.view(torch.uint8).to(torch.int32)
        mag = bits & 0x7F
        return torch.where(bits >= 0x80, -mag, mag)
    return float((rank(out) - rank(exact)).abs().max()) if out.numel() else 0.0


def _check(kernel, output, shape, out, ref, exact) -> Check:
    err, ref_err = max_error(out, exact), max_error(ref, exact)
    bound = 2 * ref_err + 1e-6
    return Check(kernel, output, shape, err, ref_err, bound, K.last_backend(), err <= bound)


def _nan(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def _shape(*dims) -> str:
    return "x".join(str(d) for d in dims)


# ---------------------------------------------------------------------------------------------


def check_transposes(m: int, n: int, device, dtype=BF16, copy: Callable | None = None,
                     add: Callable | None = None) -> list[Check]:
    """transpose_copy into a NaN-filled dst; transpose_add into a strided view of a random tensor."""
    copy, add = copy or K.transpose_copy, add or K.transpose_add
    src = torch.randn(m, n, dtype=dtype, device=device)
    dst = _nan((n, m), dtype, device)
    copy(src, dst)
    checks = [_check("transpose_copy", "dst", _shape(m, n), dst, src.T, src.T.to(F64))]
    # dst is every other row of a larger buffer, offset by one column: a non-contiguous view.
    base = torch.randn(2 * n + 1, m + 2, dtype=dtype, device=device)
    view = base[1::2, 1:m + 1]
    before = base.clone()
    src = torch.randn(m, n, dtype=dtype, device=device)
    exact = view.to(F64) + src.T.to(F64)
    ref = view.clone().add_(src.T)
    add(src, view)
    checks.append(_check("transpose_add", "dst", _shape(m, n), view, ref, exact))
    outside = torch.ones_like(base, dtype=torch.bool)
    outside[1::2, 1:m + 1] = False
    untouched = bool(torch.equal(base[outside], before[outside]))
    checks.append(Check("transpose_add", "outside the view", _shape(m, n), 0.0 if untouched else float("inf"),
                        0.0, 0.0, K.last_backend(), untouched))
    return checks


def check_symmetric(n: int, rows: int, cols: int, device, xxt: Callable | None = None,
                    xtx: Callable | None = None, ba_plus_caa: Callable | None = None) -> list[Check]:
    """xxt and xtx of a random bf16 batch (n, rows, cols); ba_plus_caa of a symmetric batch."""
    xxt, xtx, ba_plus_caa = xxt or K.xxt, xtx or K.xtx, ba_plus_caa or K.ba_plus_caa
    a = torch.randn(n, rows, cols, dtype=BF16, device=device) / cols ** 0.5
    a64 = a.to(F64)
    shape = _shape(n, rows, cols)
    out = _nan((n, rows, rows), BF16, device)
    xxt(a, out)
    checks = [_check("xxt", "out", shape, out, a @ a.mT, a64 @ a64.mT)]
    out = _nan((n, cols, cols), BF16, device)
    xtx(a, out)
    checks.append(_check("xtx", "out", shape, out, a.mT @ a, a64.mT @ a64))
    s = (a @ a.mT)                       # symmetric, as Polar Express's A
    s64 = s.to(F64)
    alpha, beta = 0.4232, -1.7098        # the last iteration's c and b, rounded
    out = _nan(s.shape, BF16, device)
    ba_plus_caa(s, alpha, beta, out)
    ref = torch.empty_like(s)
    R.ba_plus_caa(s, alpha, beta, ref)
    checks.append(_check("ba_plus_caa", "out", _shape(n, rows, rows), out, ref,
                         alpha * (s64 @ s64.mT) + beta * s64))
    return checks


def check_polar_express(n: int, rows: int, cols: int, device, tall_path="xtx", fused_momentum=True,
                        fn: Callable | None = None) -> list[Check]:
    """polar_express on a random fp32 gradient and momentum buffer (μ = 0.95 as a CPU tensor)."""
    fn = fn or K.polar_express
    grad = torch.randn(n, rows, cols, device=device)
    buf0 = torch.randn(n, rows, cols, device=device)
    mu = torch.tensor(0.95)
    buf = buf0.clone()
    out = _nan((n, rows, cols), BF16, device)
    fn(grad, buf, mu, tall_path=tall_path, fused_momentum=fused_momentum, out=out)
    backend = K.last_backend()
    ref_buf = buf0.clone()
    ref = R.polar_express(grad, ref_buf, mu, tall_path=tall_path)
    exact_buf = buf0.to(F64)
    exact = R.polar_express(grad.to(F64), exact_buf, mu.to(F64), tall_path=tall_path, dtype=F64)
    shape = _shape(n, rows, cols)
    label = f"polar_express[{tall_path}{'' if fused_momentum else ', eager momentum'}]"
    checks = [_check(label, "X", shape, out, ref, exact),
              _check(label, "momentum_buffer", shape, buf, ref_buf, exact_buf)]
    for c in checks:
        c.backend = backend
    return checks


def check_mlp(tokens: int, dim: int, hidden: int, device, fn: Callable | None = None) -> list[Check]:
    """The fused kernel's halves (pre, post, dpre) and FusedLinearReLUSquare's output and grads."""
    from speedtrace.kernels import ops

    x = torch.randn(tokens, dim, dtype=BF16, device=device)
    w1 = (torch.rand(hidden, dim, device=device) * 2 - 1).mul(3 ** 0.5 * 0.5 / dim ** 0.5).to(BF16)
    w2 = (torch.rand(hidden, dim, device=device) * 2 - 1).mul(3 ** 0.5 * 0.5 / dim ** 0.5).to(BF16)
    g = torch.randn(tokens, dim, dtype=BF16, device=device)
    shape = _shape(tokens, dim, hidden)
    pre, post = ops.linear_relu_square_fwd_op(x, w1)
    backend = K.last_backend()
    pre_r, post_r = R.linear_relu_square_forward(x, w1)
    pre64 = x.to(F64) @ w1.to(F64).T
    checks = [_check("linear_relu_square", "pre", shape, pre, pre_r, pre64),
              _check("linear_relu_square", "post", shape, post, post_r, pre64.relu().square())]
    dpre = ops.relu_square_bwd_op(g, w2, pre_r)
    dpre_r = R.relu_square_backward(g, w2, pre_r)
    checks.append(_check("linear_relu_square", "dpre", shape, dpre, dpre_r,
                         2 * (g.to(F64) @ w2.to(F64).T) * pre_r.to(F64).relu()))

    def run(f, dtype):
        ins = [t.detach().to(dtype).clone().requires_grad_() for t in (x, w1, w2)]
        out = f(*ins)
        out.backward(g.to(dtype))
        return [out.detach()] + [t.grad for t in ins]

    got = run(fn or K.linear_relu_square, BF16)
    backend = K.last_backend() if backend == "triton" else backend
    refs = run(R.linear_relu_square, BF16)
    exact = run(R.linear_relu_square, F64)
    for name, o, r, e in zip(("out", "dx", "dw1", "dw2"), got, refs, exact):
        checks.append(_check("FusedLinearReLUSquare", name, shape, o, r, e))
    for c in checks:
        c.backend = backend
    return checks


def check_cross_entropy(rows: int, dim: int, vocab: int, device, n_predict: int = 3,
                        fn: Callable | None = None) -> list[Check]:
    """The CE kernels on bf16 logits, then FusedSoftcappedCrossEntropy end to end (with FP8 head)."""
    from speedtrace.kernels import ops

    shape = _shape(rows, dim, vocab)
    targets = torch.randint(0, vocab, (rows,), device=device)
    weights = torch.tensor([1.0, 0.5, 0.25, 0.0][:n_predict], device=device)
    logits = (torch.randn(rows, vocab, device=device) * 6).to(BF16)
    losses, lse = ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5)
    backend = K.last_backend()
    losses_r, lse_r = R.softcapped_ce_forward(logits, targets, weights)
    losses64, lse64 = R.softcapped_ce_forward(logits.to(F64), targets, weights)
    checks = [_check("softcapped_ce", "losses", shape, losses, losses_r, losses64),
              _check("softcapped_ce", "lse", shape, lse, lse_r, lse64)]
    grad = torch.rand(rows, device=device)
    grad_s = 0.75 / 448
    d = ops.softcapped_ce_bwd_op(grad, logits, lse, targets, weights, grad_s, 23.0, 5.0, 7.5)
    d_r = R.softcapped_ce_backward(grad, logits, lse_r, targets, weights, grad_s)
    d64 = R.softcapped_ce_backward(grad.to(F64), logits.to(F64), lse64, targets, weights, grad_s)
    steps, ref_steps = e5m2_steps(d, d64), e5m2_steps(d_r, d64)
    checks.append(Check("softcapped_ce", "dlogits (e5m2 steps)", shape, steps, ref_steps, 1.0, backend,
                        steps <= 1))

    # End to end: FP8 head + kernels + FP8 backward, against the emulated head in float64.
    x = torch.randn(rows, dim, dtype=BF16, device=device)
    w = (torch.randn(dim, vocab, device=device) * 0.02).to(BF16)
    scales = (100 / 448, 1.6 / 448, grad_s)

    def run(f, dtype):
        xi, wi = (t.detach().to(dtype).clone().requires_grad_() for t in (x, w))
        out = f(xi, targets, weights, wi, *scales)
        out.backward(grad.to(out.dtype))
        return out.detach(), xi.grad, wi.grad

    got = run(fn or K.softcapped_cross_entropy, BF16)
    refs = _emulated_fused_ce(x, w, targets, weights, grad, scales)
    exact = _exact_fused_ce(x, w, targets, weights, grad, scales)
    for name, o, r, e in zip(("losses", "dx", "dw"), got, refs, exact):
        checks.append(_check("FusedSoftcappedCrossEntropy", name, shape, o, r, e))
    for c in checks:
        c.backend = backend
    return checks


def _emulated_fused_ce(x, w, targets, weights, grad, scales):
    """The reference chain in the kernels' dtypes: emulated FP8 head, fp32 loss, e5m2 gradient."""
    x_s, w_s, grad_s = scales
    logits, x_f8, w_f8 = R.fp8_head(x, w, x_s, w_s)
    losses, lse = R.softcapped_ce_forward(logits, targets, weights)
    d = R.softcapped_ce_backward(grad, logits, lse, targets, weights, grad_s)
    dx, dw = R.fp8_head_backward(d, x_f8, w_f8, x_s, w_s, grad_s)
    return losses, dx, dw


def _exact_fused_ce(x, w, targets, weights, grad, scales):
    """float64 from the same e4m3 inputs: exact head, exact loss, exact (unquantised) gradient."""
    x_s, w_s, grad_s = scales
    x_f8 = x.div(x_s).to(torch.float8_e4m3fn).to(F64)
    w_f8 = w.div(w_s).to(torch.float8_e4m3fn).to(F64)
    logits = (x_f8 @ w_f8) * (x_s * w_s)
    losses, _ = R.softcapped_ce_forward(logits, targets, weights)
    z_grad = _exact_logit_grad(grad.to(F64), logits, targets, weights)
    return losses, (z_grad @ w_f8.T) * w_s, (x_f8.T @ z_grad) * x_s


def _exact_logit_grad(grad, logits, targets, weights):
    """d loss/d logits in float64 by autograd of the loss: a route independent of the formula.

    It equals the kernels' formula when every target is in range and no weight is negative,
    which is how the checks draw them.
    """
    with torch.enable_grad():
        lg = logits.detach().clone().requires_grad_()
        losses, _ = R.softcapped_ce_forward(lg, targets, weights)
        torch.dot(losses, grad).backward()
    return lg.grad


# ---------------------------------------------------------------------------------------------
# The trainer's real shapes (GPU)

TRAINER_SHAPES = {
    "transpose": (768, 50304),          # lm_head (768, V) ↔ embed (V, 768)
    "attn_bank": (40, 768, 768),        # NorMuon's view of attn_bank
    "mlp_bank": (24, 3072, 768),        # NorMuon's view of mlp_bank
    "mlp": (16384, 768, 3072),          # tokens, model dim, hidden
    "cross_entropy": (4096, 768, 50304),  # rows (fewer than a micro-batch: float64 memory), dim, V
}


def trainer_shape_checks(device="cuda", compiled: bool = False) -> list[Check]:
    """Every kernel at the trainer's shapes, eagerly or inside ``torch.compile(fullgraph=True)``.

    polar_express compiles itself on CUDA (the trainer calls it as its own compiled function),
    so ``compiled`` changes nothing for it; the eager run checks the parent's switches as well.
    """
    def maybe(fn):
        return torch.compile(fn, fullgraph=True) if compiled else fn

    s = TRAINER_SHAPES
    results = check_transposes(*s["transpose"], device, copy=maybe(K.transpose_copy), add=maybe(K.transpose_add))
    for n, r, c in (s["attn_bank"], s["mlp_bank"]):
        results += check_symmetric(n, r, c, device, xxt=maybe(K.xxt), xtx=maybe(K.xtx),
                                   ba_plus_caa=maybe(K.ba_plus_caa))
    results += check_polar_express(*s["attn_bank"], device)
    results += check_polar_express(*s["mlp_bank"], device)
    if not compiled:
        results += check_polar_express(*s["mlp_bank"], device, tall_path="transpose", fused_momentum=False)
    results += check_mlp(*s["mlp"], device, fn=maybe(K.linear_relu_square))
    results += check_cross_entropy(*s["cross_entropy"], device, fn=maybe(K.softcapped_cross_entropy))
    return results
