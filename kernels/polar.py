"""Nesterov momentum fused in front of Polar Express orthogonalisation (NorMuon's inner step).

One function serves wide, square and tall batches. The Gram matrix comes from the symmetric
``xxt``/``xtx`` kernels and the polynomial from ``ba_plus_caa``; each iteration ends with one
batched matmul plus the ``a·X`` term. On CUDA the whole thing runs as one compiled graph
(``torch.compile(fullgraph=True, dynamic=False)``) with the kernels as opaque ops; on CPU it runs
eagerly (it still traces if a caller compiles it).
"""

from __future__ import annotations

import torch

from speedtrace.kernels import ops
from speedtrace.kernels.reference import POLAR_EPS, POLAR_EXPRESS_COEFFS, POLAR_SAFETY

TALL_PATHS = ("xtx", "transpose")
# Above this many rows a separate bmm and add is faster than baddbmm, which copies X defensively
# when it is both the addend and a factor.
SPLIT_BADDBMM_ROWS = 1024


def _iterate(x: torch.Tensor) -> torch.Tensor:
    """Five Polar Express steps on a normalised, contiguous bf16 batch (n, r, c)."""
    tall = x.size(-2) > x.size(-1)
    side = x.size(-1) if tall else x.size(-2)
    split = x.size(-2) > SPLIT_BADDBMM_ROWS
    for a, b, c in POLAR_EXPRESS_COEFFS:
        gram = x.new_empty((x.size(0), side, side))
        (ops.xtx_op if tall else ops.xxt_op)(x, gram)
        poly = torch.empty_like(gram)
        ops.ba_plus_caa_op(gram, c, b, poly)
        if split:
            y = torch.bmm(x, poly) if tall else torch.bmm(poly, x)
            x = y.add_(x, alpha=a)
        else:
            x = torch.baddbmm(x, x, poly, beta=a) if tall else torch.baddbmm(x, poly, x, beta=a)
    return x


def _orthogonalise(g: torch.Tensor, tall_path: str) -> torch.Tensor:
    """Polar Express of a fp32 or bf16 batch (n, r, c); bf16 result of the same shape."""
    x = g.bfloat16()
    transposed = tall_path == "transpose" and x.size(-2) > x.size(-1)
    if transposed:
        # The parent record's tall path: orthogonalise Xᵀ with the wide kernels, transpose back.
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * (1 + POLAR_SAFETY) + POLAR_EPS)
    x = _iterate(x.contiguous())
    return x.mT if transposed else x


def _nesterov_then_orthogonalise(grad, momentum_buffer, momentum, tall_path):
    momentum = momentum.to(momentum_buffer.dtype)
    momentum_buffer.lerp_(grad.to(momentum_buffer.dtype), 1 - momentum)
    g = grad.to(momentum_buffer.dtype).lerp(momentum_buffer, momentum)
    return _orthogonalise(g, tall_path)


_compiled: dict[str, object] = {}


def _maybe_compiled(fn):
    """``fn`` compiled once per process for CUDA; CPU callers get the eager function."""
    if fn.__name__ not in _compiled:
        _compiled[fn.__name__] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _compiled[fn.__name__]


def polar_express(grad: torch.Tensor, momentum_buffer: torch.Tensor, momentum, *,
                  tall_path: str = "xtx", fused_momentum: bool = True,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Nesterov momentum, then Polar Express; returns the bf16 orthogonalised update.

    grad: (n, r, c) or (r, c), any float dtype (the trainer passes fp32). momentum_buffer: fp32,
    same shape, **updated in place** (buf ← lerp(buf, g, 1−μ)); grad itself is not modified.
    momentum: μ as a float or a 0-D fp32 tensor (a CPU tensor avoids recompiles when it changes).
    The orthogonalised input is g' = lerp(g, buf, μ) computed in fp32, then cast to bf16.
    tall_path: for r > c, "xtx" (record 233: A = XᵀX, X ← aX + XB, no transposes) or "transpose"
    (its parent: orthogonalise Xᵀ with XXᵀ and return a transposed, non-contiguous view).
    fused_momentum: True runs the lerps inside the compiled graph with μ as a tensor (the record);
    False runs them eagerly with μ as a Python float (the parent). The numbers are the same.
    out: optional bf16 tensor of grad's shape to receive the result (it is then returned).
    """
    if tall_path not in TALL_PATHS:
        raise ValueError(f"polar_express: tall_path must be one of {TALL_PATHS}, got {tall_path!r}")
    if grad.ndim not in (2, 3) or momentum_buffer.shape != grad.shape:
        raise ValueError(f"polar_express: grad {tuple(grad.shape)} must be (n, r, c) or (r, c) and "
                         f"momentum_buffer {tuple(momentum_buffer.shape)} the same shape")
    batched = grad.ndim == 3
    g = grad if batched else grad.unsqueeze(0)
    buf = momentum_buffer if batched else momentum_buffer.unsqueeze(0)
    compile_it = grad.is_cuda and not torch.compiler.is_compiling()
    if fused_momentum:
        if not isinstance(momentum, torch.Tensor):
            momentum = torch.tensor(float(momentum), dtype=torch.float32)
        fn = _maybe_compiled(_nesterov_then_orthogonalise) if compile_it else _nesterov_then_orthogonalise
        x = fn(g, buf, momentum, tall_path)
    else:
        mu = float(momentum)
        buf.lerp_(g.to(buf.dtype), 1 - mu)
        g = g.to(buf.dtype).lerp(buf, mu)
        fn = _maybe_compiled(_orthogonalise) if compile_it else _orthogonalise
        x = fn(g, tall_path)
    if not batched:
        x = x.squeeze(0)
    if out is None:
        return x
    out.copy_(x)
    return out
