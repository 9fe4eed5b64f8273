"""Softcapped multi-token cross-entropy over FP8 lm_head logits: one Triton program per row.

Forward: lse of z = A·σ((logit + B)/C) over the row, and loss = Σ_k w_k·(lse − z[target[row+k]]).
Because σ ∈ (0, 1), z < max(A, 0): the exponentials are taken relative to that fixed bound, which
cannot overflow and needs neither a running maximum nor rescaling of the partial sums.
Backward: the logits gradient, divided by grad_s and stored as float8 e5m2 for the two FP8
matmuls that follow.

Both kernels are bound by the arithmetic per logit (two exponentials, a reciprocal, the casts),
not by the bytes: (logit + B)/C is taken as one fused multiply-add with 1/C and B/C, since an fp32
division costs about as much as the exponential. The backward's hot loop has no per-column test
for the targets: it writes S_w·p·σ'(u) for every column, and the (at most n_predict) target columns
are then rewritten with their one-hot weights, after a barrier so that those writes land last.
``fast_sigmoid`` takes σ(u) as ½ + ½·tanh(u/2) with the GPU's approximate tanh (one special-function
instruction instead of an exponential and a reciprocal; relative error ~2⁻¹¹, far under the e5m2
output's 2⁻³), backward only; the interpreter uses the exact σ either way.
Float scalars are cast to fp32 explicitly inside the kernels: a caller that hands them over as
fp64 (as torch.compile does for traced Triton kernels) must not change the kernels' arithmetic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels import reference
from speedtrace.kernels._dispatch import record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast

BLOCK = 64 if INTERPRET else 1024
# Launch settings of the two kernels (benchmarks/anchor_kernels.py --variants times others).
FWD_WARPS = 2 if INTERPRET else 4
BWD_WARPS = 2 if INTERPRET else 4
FAST_SIGMOID = False


@triton.jit
def _sigmoid(u, FAST: tl.constexpr, INTERPRET: tl.constexpr):
    if FAST and not INTERPRET:
        t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [u * 0.5], dtype=tl.float32,
                                      is_pure=True, pack=1)
        return 0.5 + 0.5 * t
    return tl.sigmoid(u)


@triton.jit
def softcapped_ce_fwd_kernel(
    logits, losses, lse_out, targets, weights, n_rows, n_cols, n_predict, s_row,
    A, B, C, BLOCK: tl.constexpr,
):
    A = tl.cast(A, tl.float32)
    inv_c = 1.0 / tl.cast(C, tl.float32)
    b_over_c = tl.cast(B, tl.float32) * inv_c
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits + row * s_row
    shift = tl.maximum(A, 0.0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        z = A * tl.sigmoid(x * inv_c + b_over_c)
        acc += tl.where(cols < n_cols, tl.exp(z - shift), 0.0)
    lse = shift + tl.log(tl.sum(acc, axis=0))
    tl.store(lse_out + row, lse)
    loss = tl.zeros((), dtype=tl.float32)
    for k in range(n_predict):
        src = row + k
        w = tl.load(weights + k).to(tl.float32)
        tgt = tl.load(targets + src, mask=src < n_rows, other=-1).to(tl.int64)
        ok = (src < n_rows) & (w > 0) & (tgt >= 0) & (tgt < n_cols)
        x_t = tl.load(row_ptr + tgt, mask=ok, other=0.0).to(tl.float32)
        loss += tl.where(ok, w * (lse - A * tl.sigmoid(x_t * inv_c + b_over_c)), 0.0)
    tl.store(losses + row, loss)


@triton.jit
def softcapped_ce_bwd_kernel(
    grad_logits, grad_losses, lse_in, logits, targets, weights, n_rows, n_cols, n_predict,
    s_row, s_grad_row, A, B, C, grad_s, BLOCK: tl.constexpr, FAST: tl.constexpr, INTERPRET: tl.constexpr,
):
    A = tl.cast(A, tl.float32)
    inv_c = 1.0 / tl.cast(C, tl.float32)
    b_over_c = tl.cast(B, tl.float32) * inv_c
    grad_s = tl.cast(grad_s, tl.float32)
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits + row * s_row
    out_ptr = grad_logits + row * s_grad_row
    lse = tl.load(lse_in + row)
    g = tl.load(grad_losses + row).to(tl.float32)
    # S_w counts every in-range k, as the record does (the forward also skips w <= 0 and bad targets).
    s_w = tl.zeros((), dtype=tl.float32)
    for k in range(n_predict):
        s_w += tl.where(row + k < n_rows, tl.load(weights + k).to(tl.float32), 0.0)
    scale = g * (A * inv_c) / grad_s
    scale_p = scale * s_w
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        sig = _sigmoid(x * inv_c + b_over_c, FAST, INTERPRET)
        d = scale_p * tl.exp(A * sig - lse) * sig * (1.0 - sig)
        tl.store(out_ptr + cols, cast(d, tl.float8e5, INTERPRET), mask=cols < n_cols)
    # The target columns again, now with Σ w_j over every in-range j whose target is that column
    # (a token repeated within the next n_predict gets all its weights). The barrier makes this
    # program's stores above visible and ordered before these.
    tl.debug_barrier()
    for k in range(n_predict):
        src = row + k
        tgt = tl.load(targets + src, mask=src < n_rows, other=-1).to(tl.int64)
        picked = tl.zeros((), dtype=tl.float32)
        for j in range(n_predict):
            other = tl.load(targets + row + j, mask=row + j < n_rows, other=-1).to(tl.int64)
            picked += tl.where((row + j < n_rows) & (other == tgt), tl.load(weights + j).to(tl.float32), 0.0)
        ok = (src < n_rows) & (tgt >= 0) & (tgt < n_cols)
        x_t = tl.load(row_ptr + tgt, mask=ok, other=0.0).to(tl.float32)
        sig = _sigmoid(x_t * inv_c + b_over_c, FAST, INTERPRET)
        d = scale * (s_w * tl.exp(A * sig - lse) - picked) * sig * (1.0 - sig)
        tl.store(out_ptr + tgt, cast(d, tl.float8e5, INTERPRET), mask=ok)


def softcapped_ce_forward(logits, targets, mtp_weights, A=reference.SOFTCAP_A, B=reference.SOFTCAP_B,
                          C=reference.SOFTCAP_C, *, num_warps: int | None = None):
    """(losses, lse), fp32 (n_rows,), for bf16 logits (n_rows, n_cols); see the reference."""
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(losses)
    if n_rows == 0:
        return losses, lse
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    grid = record_launch("softcapped_ce_fwd_kernel", (n_rows,))
    softcapped_ce_fwd_kernel[grid](
        logits, losses, lse, targets.contiguous(), mtp_weights.contiguous(), n_rows, n_cols,
        mtp_weights.shape[0], logits.stride(0), float(A), float(B), float(C), BLOCK=BLOCK,
        num_warps=num_warps or FWD_WARPS)
    return losses, lse


def softcapped_ce_backward(grad_losses, logits, lse, targets, mtp_weights, grad_s,
                           A=reference.SOFTCAP_A, B=reference.SOFTCAP_B, C=reference.SOFTCAP_C, *,
                           num_warps: int | None = None, fast_sigmoid: bool | None = None):
    """The logits gradient / grad_s as float8_e5m2 (n_rows, n_cols); see the reference."""
    n_rows, n_cols = logits.shape
    out = torch.empty((n_rows, n_cols), dtype=torch.float8_e5m2, device=logits.device)
    if n_rows == 0:
        return out
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    grid = record_launch("softcapped_ce_bwd_kernel", (n_rows,))
    softcapped_ce_bwd_kernel[grid](
        out, grad_losses.contiguous(), lse, logits, targets.contiguous(), mtp_weights.contiguous(),
        n_rows, n_cols, mtp_weights.shape[0], logits.stride(0), out.stride(0),
        float(A), float(B), float(C), float(grad_s), BLOCK=BLOCK,
        FAST=FAST_SIGMOID if fast_sigmoid is None else fast_sigmoid, INTERPRET=INTERPRET,
        num_warps=num_warps or BWD_WARPS)
    return out


# ---------------------------------------------------------------------------------------------
# The FP8 matmuls around the kernels (torch._scaled_mm, sm_89+)


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((), value, dtype=torch.float32, device=like.device)


def _fits_scaled_mm(*dims: int) -> bool:
    return all(d % 16 == 0 for d in dims)


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t``ᵀ for a float8 ``t`` (r, c); ``_transposed(t).T`` is ``t`` column-major,
    as ``_scaled_mm`` wants its second operand.

    ``t.T.contiguous()`` does the same, but for float8 outside torch.compile that is ATen's
    generic strided copy, far below copy bandwidth for a tensor the size of the logits gradient.
    The tiled transpose kernel moves the bytes (viewed as uint8) at copy bandwidth.
    """
    from speedtrace.kernels import triton_transpose

    out = torch.empty((t.shape[1], t.shape[0]), dtype=t.dtype, device=t.device)
    triton_transpose.transpose_copy(t.view(torch.uint8), out.view(torch.uint8))
    return out


def fp8_head(x: torch.Tensor, w: torch.Tensor, x_s: float, w_s: float):
    """(logits bf16 (n, V), x_f8, w_f8) with ``torch._scaled_mm`` (fast accumulation)."""
    if not _fits_scaled_mm(*x.shape, w.shape[1]):
        return reference.fp8_head(x, w, x_s, w_s)
    x_f8 = x.div(x_s).to(torch.float8_e4m3fn)
    w_f8 = w.div(w_s).to(torch.float8_e4m3fn)
    # _scaled_mm wants its second operand column-major.
    logits = torch._scaled_mm(x_f8, _transposed(w_f8).T, scale_a=_scalar(x_s, x), scale_b=_scalar(w_s, x),
                              out_dtype=torch.bfloat16, use_fast_accum=True)
    return logits, x_f8, w_f8


def fp8_head_backward(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s):
    """(dx bf16 (n, K), dw fp32 (K, V)) from the e5m2 logits gradient (scaled by 1/grad_s)."""
    if not _fits_scaled_mm(*x_f8.shape, w_f8.shape[1]):
        return reference.fp8_head_backward(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s)
    g = _scalar(grad_s, dlogit_f8)
    dx = torch._scaled_mm(dlogit_f8, w_f8.T, scale_a=g, scale_b=_scalar(w_s, g), out_dtype=torch.bfloat16)
    dw = torch._scaled_mm(_transposed(x_f8), _transposed(dlogit_f8).T, scale_a=_scalar(x_s, g), scale_b=g,
                          out_dtype=torch.float32)
    return dx, dw
