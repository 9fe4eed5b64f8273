"""Autograd Functions of the two fused training kernels: the MLP and the FP8 head with loss.

Both are written in terms of the registered ops of ``speedtrace.kernels.ops``, so Dynamo can trace
them inside a ``torch.compile(fullgraph=True)`` model: the FP8 head's and the loss's kernels stay
opaque, the MLP's are launched from Inductor's generated code (triton_ops).
"""

from __future__ import annotations

import torch

from speedtrace.kernels import ops
from speedtrace.kernels.reference import SOFTCAP_A, SOFTCAP_B, SOFTCAP_C


class FusedLinearReLUSquare(torch.autograd.Function):
    """out = relu(x·w1ᵀ)²·w2 for x (..., K) and w1, w2 (N, K), the record's MLP.

    The forward kernel writes pre = x·w1ᵀ and post = relu(pre)²; both are saved, so the backward
    needs no recomputation: dpre = 2·(g·w2ᵀ)·relu(pre) comes from the same kernel's backward mode.
    """

    @staticmethod
    def forward(ctx, x, w1, w2):
        x2d = x.reshape(-1, x.shape[-1])
        pre, post = ops.linear_relu_square_fwd_op(x2d, w1)
        out = post @ w2
        ctx.save_for_backward(x2d, w1, w2, pre, post)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x2d, w1, w2, pre, post = ctx.saved_tensors
        g2d = grad_out.reshape(-1, grad_out.shape[-1])
        dw2 = post.T @ g2d
        dpre = ops.relu_square_bwd_op(g2d, w2, pre)
        dw1 = dpre.T @ x2d
        dx = dpre @ w1
        return dx.view(grad_out.shape), dw1, dw2


def linear_relu_square(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """relu(x·w1ᵀ)²·w2 through ``FusedLinearReLUSquare`` (x (..., K); w1, w2 (N, K); same dtype)."""
    if x.shape[-1] != w1.shape[1] or w1.shape != w2.shape:
        raise ValueError(f"linear_relu_square: x {tuple(x.shape)}, w1 {tuple(w1.shape)} and "
                         f"w2 {tuple(w2.shape)} do not fit (x (..., K), w1 and w2 (N, K))")
    return FusedLinearReLUSquare.apply(x, w1, w2)


class FusedSoftcappedCrossEntropy(torch.autograd.Function):
    """Per-row losses of an FP8 lm_head followed by softcapped multi-token cross-entropy.

    Forward: logits = (x/x_s)_e4m3 · (w/w_s)_e4m3 · x_s·w_s in bf16 (``torch._scaled_mm`` on
    sm_89+, an fp32 emulation with the same quantisation elsewhere), z = A·σ((logits + B)/C),
    loss_row = Σ_k w_k·(lse(z_row) − z_row[target[row+k]]). Backward: the logits gradient divided
    by grad_s is stored as float8_e5m2 and fed to two scaled matmuls, giving dx (bf16) and
    d lm_head_weight (fp32, (K, V)).
    """

    @staticmethod
    def forward(ctx, x, targets, mtp_weights, lm_head_weight, x_s, w_s, grad_s,
                A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C):
        if mtp_weights is None:
            mtp_weights = torch.ones(1, dtype=torch.float32, device=x.device)
        logits, x_f8, w_f8 = ops.fp8_head_op(x, lm_head_weight, float(x_s), float(w_s))
        losses, lse = ops.softcapped_ce_fwd_op(logits, targets, mtp_weights, float(A), float(B), float(C))
        ctx.save_for_backward(logits, targets, mtp_weights, lse, x_f8, w_f8)
        ctx.params = (float(x_s), float(w_s), float(grad_s), float(A), float(B), float(C))
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        logits, targets, mtp_weights, lse, x_f8, w_f8 = ctx.saved_tensors
        x_s, w_s, grad_s, A, B, C = ctx.params
        dlogit = ops.softcapped_ce_bwd_op(grad_losses.contiguous(), logits, lse, targets, mtp_weights,
                                          grad_s, A, B, C)
        dx, dw = ops.fp8_head_backward_op(dlogit, x_f8, w_f8, x_s, w_s, grad_s)
        return dx, None, None, dw, None, None, None, None, None, None


def softcapped_cross_entropy(x, targets, mtp_weights, lm_head_weight, x_s, w_s, grad_s,
                             A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C) -> torch.Tensor:
    """Per-row fp32 losses (n_rows,) through ``FusedSoftcappedCrossEntropy``.

    x (n_rows, K) bf16 (leading dims are flattened, as are targets'); targets (n_rows,) integer;
    mtp_weights (n_predict,) fp32 or None (= [1]);
    lm_head_weight (K, V) bf16 (stored transposed, as the record's CastedLinearT); x_s, w_s,
    grad_s the FP8 scales (the record: 100/448, 1.6/448, grad_scale·0.75/448).
    """
    if x.ndim > 2:
        x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    if x.ndim != 2 or lm_head_weight.ndim != 2 or x.shape[1] != lm_head_weight.shape[0]:
        raise ValueError(f"softcapped_cross_entropy: x {tuple(x.shape)} and lm_head_weight "
                         f"{tuple(lm_head_weight.shape)} do not fit (x (n, K), weight (K, V))")
    if targets.shape != (x.shape[0],):
        raise ValueError(f"softcapped_cross_entropy: targets {tuple(targets.shape)} != ({x.shape[0]},)")
    return FusedSoftcappedCrossEntropy.apply(x, targets, mtp_weights, lm_head_weight, x_s, w_s, grad_s,
                                             A, B, C)
