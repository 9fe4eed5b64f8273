"""speedtrace.kernels: the Triton kernels of modded-nanogpt record 233, each beside its reference.

Every public function dispatches: Triton on CUDA tensors, or on CPU tensors when Triton's
interpreter is asked for (``TRITON_INTERPRET=1`` set before the first kernel call), otherwise the
plain-PyTorch reference of ``speedtrace.kernels.reference``. ``last_backend()`` says which ran.
The kernels are registered as ``torch.library`` custom ops (``torch.ops.speedtrace.*``), so they
work inside ``torch.compile(fullgraph=True)`` on GPU and on CPU alike.
"""

from __future__ import annotations

import torch

from speedtrace.kernels import ops
from speedtrace.kernels._dispatch import last_backend
from speedtrace.kernels.functions import (
    FusedLinearReLUSquare,
    FusedSoftcappedCrossEntropy,
    linear_relu_square,
    softcapped_cross_entropy,
)
from speedtrace.kernels.polar import polar_express
from speedtrace.kernels.reference import POLAR_EXPRESS_COEFFS

__all__ = [
    "FusedLinearReLUSquare",
    "FusedSoftcappedCrossEntropy",
    "POLAR_EXPRESS_COEFFS",
    "ba_plus_caa",
    "last_backend",
    "linear_relu_square",
    "polar_express",
    "softcapped_cross_entropy",
    "transpose_add",
    "transpose_copy",
    "xtx",
    "xxt",
]


def _check_transpose(name: str, src: torch.Tensor, dst: torch.Tensor) -> None:
    if src.ndim != 2 or dst.ndim != 2 or dst.shape != src.shape[::-1]:
        raise ValueError(f"{name}: src {tuple(src.shape)} and dst {tuple(dst.shape)} must be (M, N) and (N, M)")
    if src.dtype != dst.dtype or src.device != dst.device:
        raise ValueError(f"{name}: src and dst differ in dtype or device ({src.dtype}/{dst.dtype}, "
                         f"{src.device}/{dst.device})")


def transpose_copy(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst = srcᵀ for src (M, N) and dst (N, M) of one dtype (any strides); returns dst.

    Tiled so that both the reads of src and the writes of dst are coalesced.
    """
    _check_transpose("transpose_copy", src, dst)
    ops.transpose_copy_op(src, dst)
    return dst


def transpose_add(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst += srcᵀ for src (M, N) and dst (N, M) of one dtype (any strides); returns dst."""
    _check_transpose("transpose_add", src, dst)
    ops.transpose_add_op(src, dst)
    return dst


def _check_sym(name: str, a: torch.Tensor, out: torch.Tensor, side: int) -> None:
    expected = (*a.shape[:-2], side, side)
    if a.ndim not in (2, 3) or tuple(out.shape) != expected:
        raise ValueError(f"{name}: a {tuple(a.shape)} must be (M, K) or (n, M, K) and out "
                         f"{tuple(out.shape)} must be {expected}")
    if a.dtype != out.dtype or a.device != out.device:
        raise ValueError(f"{name}: a and out differ in dtype or device")


def xxt(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """out = a·aᵀ for a (M, K) or (n, M, K); only tiles on and below the diagonal are computed
    and each is mirrored. out (…, M, M) is allocated when not given; returns out."""
    if out is None:
        out = a.new_empty((*a.shape[:-1], a.shape[-2]))
    _check_sym("xxt", a, out, a.shape[-2])
    ops.xxt_op(a, out)
    return out


def xtx(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """out = aᵀ·a for a (M, K) or (n, M, K), lower tiles computed and mirrored; out (…, K, K)."""
    if out is None:
        out = a.new_empty((*a.shape[:-2], a.shape[-1], a.shape[-1]))
    _check_sym("xtx", a, out, a.shape[-1])
    ops.xtx_op(a, out)
    return out


def ba_plus_caa(a: torch.Tensor, alpha: float, beta: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """out = alpha·a·aᵀ + beta·a for a square symmetric a (M, M) or (n, M, M) (the record's
    ``ba_plus_cAA``: b·A + c·A² with alpha = c, beta = b); lower tiles computed and mirrored."""
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"ba_plus_caa: a {tuple(a.shape)} must be square")
    if out is None:
        out = torch.empty_like(a)
    _check_sym("ba_plus_caa", a, out, a.shape[-1])
    ops.ba_plus_caa_op(a, float(alpha), float(beta), out)
    return out
