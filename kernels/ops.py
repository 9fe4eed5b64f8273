"""The kernels as ``torch.library`` custom ops (namespace ``speedtrace``).

Registering them makes every kernel opaque to torch.compile: Dynamo and Inductor see one op with
a fake (shape-only) implementation, and the real one, Triton or reference, runs when the compiled
graph does. That keeps float scalars Python floats (no fp64 promotion of Triton arguments) and
lets the same compiled model run on CPU, where the op falls back to the reference.

The MLP's two ops are the exception (on GPUs): ``torch.library.triton_op``s, whose kernels
Inductor launches from its own generated code.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch.library import custom_op, triton_op

from speedtrace.kernels import reference
from speedtrace.kernels._dispatch import interpreting, use_triton


def _triton(module: str):
    """A Triton kernel module, imported on first use so that TRITON_INTERPRET can be set first."""
    return importlib.import_module(f"speedtrace.kernels.{module}")


BF16_ONLY = (torch.bfloat16,)


def _impl(t: torch.Tensor, module: str, dtypes=None):
    return _triton(module) if use_triton(t, dtypes) else reference


# ---------------------------------------------------------------------------------------------
# Transposes (mutate dst)


@custom_op("speedtrace::transpose_copy", mutates_args=("dst",))
def transpose_copy_op(src: torch.Tensor, dst: torch.Tensor) -> None:
    _impl(src, "triton_transpose").transpose_copy(src, dst)


@custom_op("speedtrace::transpose_add", mutates_args=("dst",))
def transpose_add_op(src: torch.Tensor, dst: torch.Tensor) -> None:
    _impl(src, "triton_transpose").transpose_add(src, dst)


# ---------------------------------------------------------------------------------------------
# Symmetric products (mutate out)


@custom_op("speedtrace::xxt", mutates_args=("out",))
def xxt_op(a: torch.Tensor, out: torch.Tensor) -> None:
    _impl(a, "triton_symmetric", BF16_ONLY).xxt(a, out)


@custom_op("speedtrace::xtx", mutates_args=("out",))
def xtx_op(a: torch.Tensor, out: torch.Tensor) -> None:
    _impl(a, "triton_symmetric", BF16_ONLY).xtx(a, out)


@custom_op("speedtrace::ba_plus_caa", mutates_args=("out",))
def ba_plus_caa_op(a: torch.Tensor, alpha: float, beta: float, out: torch.Tensor) -> None:
    _impl(a, "triton_symmetric", BF16_ONLY).ba_plus_caa(a, alpha, beta, out)


# ---------------------------------------------------------------------------------------------
# MLP halves: forward (pre, post) and the backward's dpre


# triton_ops rather than custom_ops: Inductor traces into them and emits the kernel's launch in
# its own generated code (kernels/triton_mlp.py says why that matters). The backend choice is made
# in Python, so under torch.compile it happens (and ``last_backend()`` is set) once, at tracing.
# Under the interpreter they are opaque custom_ops instead: wrap_triton hands interpreted kernels
# back unwrapped, so tracing would run them on fake tensors.


def _mlp_op(name: str, fake: Callable):
    if not interpreting():
        return triton_op(name, mutates_args=())

    def register(fn):
        op = custom_op(name, fn, mutates_args=())
        op.register_fake(fake)
        return op
    return register


def _mlp_forward_fake(x2d, w1):
    shape = (x2d.shape[0], w1.shape[0])
    return x2d.new_empty(shape), x2d.new_empty(shape)


def _mlp_backward_fake(grad2d, w2, pre):
    return grad2d.new_empty((grad2d.shape[0], w2.shape[0]))


@_mlp_op("speedtrace::linear_relu_square_fwd", _mlp_forward_fake)
def linear_relu_square_fwd_op(x2d: torch.Tensor, w1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _impl(x2d, "triton_mlp", BF16_ONLY).linear_relu_square_forward(x2d, w1)


@_mlp_op("speedtrace::relu_square_bwd", _mlp_backward_fake)
def relu_square_bwd_op(grad2d: torch.Tensor, w2: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    return _impl(grad2d, "triton_mlp", BF16_ONLY).relu_square_backward(grad2d, w2, pre)


# ---------------------------------------------------------------------------------------------
# FP8 head (scaled_mm on sm_89+ GPUs, the emulation elsewhere) and the cross-entropy kernels


def _has_scaled_mm(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.get_device_capability(t.device) >= (8, 9)


@custom_op("speedtrace::fp8_head", mutates_args=())
def fp8_head_op(x: torch.Tensor, w: torch.Tensor, x_s: float, w_s: float) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    if _has_scaled_mm(x):
        return _triton("triton_cross_entropy").fp8_head(x, w, x_s, w_s)
    return reference.fp8_head(x, w, x_s, w_s)


@fp8_head_op.register_fake
def _(x, w, x_s, w_s):
    return (x.new_empty((x.shape[0], w.shape[1]), dtype=torch.bfloat16),
            x.new_empty(x.shape, dtype=torch.float8_e4m3fn),
            w.new_empty(w.shape, dtype=torch.float8_e4m3fn))


@custom_op("speedtrace::fp8_head_backward", mutates_args=())
def fp8_head_backward_op(dlogit_f8: torch.Tensor, x_f8: torch.Tensor, w_f8: torch.Tensor,
                         x_s: float, w_s: float, grad_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    if _has_scaled_mm(dlogit_f8):
        return _triton("triton_cross_entropy").fp8_head_backward(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s)
    return reference.fp8_head_backward(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s)


@fp8_head_backward_op.register_fake
def _(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s):
    return (dlogit_f8.new_empty(x_f8.shape, dtype=torch.bfloat16),
            dlogit_f8.new_empty(w_f8.shape, dtype=torch.float32))


@custom_op("speedtrace::softcapped_ce_fwd", mutates_args=())
def softcapped_ce_fwd_op(logits: torch.Tensor, targets: torch.Tensor, mtp_weights: torch.Tensor,
                         A: float, B: float, C: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _impl(logits, "triton_cross_entropy").softcapped_ce_forward(logits, targets, mtp_weights, A, B, C)


@softcapped_ce_fwd_op.register_fake
def _(logits, targets, mtp_weights, A, B, C):
    n = logits.shape[0]
    return logits.new_empty(n, dtype=torch.float32), logits.new_empty(n, dtype=torch.float32)


@custom_op("speedtrace::softcapped_ce_bwd", mutates_args=())
def softcapped_ce_bwd_op(grad_losses: torch.Tensor, logits: torch.Tensor, lse: torch.Tensor,
                         targets: torch.Tensor, mtp_weights: torch.Tensor, grad_s: float,
                         A: float, B: float, C: float) -> torch.Tensor:
    return _impl(logits, "triton_cross_entropy").softcapped_ce_backward(
        grad_losses, logits, lse, targets, mtp_weights, grad_s, A, B, C)


@softcapped_ce_bwd_op.register_fake
def _(grad_losses, logits, lse, targets, mtp_weights, grad_s, A, B, C):
    return logits.new_empty(logits.shape, dtype=torch.float8_e5m2)
