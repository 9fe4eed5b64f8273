"""Symmetric products for Polar Express: a·aᵀ, aᵀ·a and alpha·a·aᵀ + beta·a, batched.

The result is symmetric, so the grid covers only the tiles on and below the diagonal: program t
of a batch maps to the t-th (row, col) pair with row ≥ col, computes that tile with fp32
accumulation, stores it and stores its transpose in the mirrored position. That launches
T = nb·(nb+1)/2 programs per matrix instead of nb² (nb = tiles along a side).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast, dot

if INTERPRET:
    # Small tiles so that small test shapes still span several tiles (tl.dot needs >= 16).
    BLOCK, BLOCK_K, NUM_WARPS, NUM_STAGES = 16, 16, 4, 1
else:
    BLOCK, BLOCK_K, NUM_WARPS, NUM_STAGES = 128, 64, 8, 4


def triangle_tiles(side: int, block: int = BLOCK) -> int:
    """Programs launched per matrix: tiles on and below the diagonal of a side×side output."""
    nb = triton.cdiv(side, block)
    return nb * (nb + 1) // 2


@triton.jit
def _lower_tile(t):
    """(row, col) of the t-th lower-triangle tile in row-major order: t = row·(row+1)/2 + col."""
    row = ((tl.sqrt((8 * t + 1).to(tl.float32)) - 1) * 0.5).to(tl.int32)
    # fp32 sqrt can land one off for large t: nudge into place.
    row = tl.where((row + 1) * (row + 2) // 2 <= t, row + 1, row)
    row = tl.where(row * (row + 1) // 2 > t, row - 1, row)
    return row, t - row * (row + 1) // 2


@triton.jit
def symmetric_product_kernel(
    a, out, side, depth,
    s_ab, s_ar, s_ac, s_ob, s_or, s_oc,
    alpha, beta,
    GRAM_OF_COLUMNS: tl.constexpr,   # True: aᵀ·a (side = a's columns); False: a·aᵀ
    ADD_INPUT: tl.constexpr,         # True: alpha·a·aᵀ + beta·a (a square and symmetric)
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, INTERPRET: tl.constexpr,
):
    ti, tj = _lower_tile(tl.program_id(0))
    batch = tl.program_id(1).to(tl.int64)
    a += batch * s_ab
    out += batch * s_ob
    rows = ti * BLOCK + tl.arange(0, BLOCK)
    cols = tj * BLOCK + tl.arange(0, BLOCK)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k0 in range(0, depth, BLOCK_K):
        kk = k0 + ks
        if GRAM_OF_COLUMNS:
            # (BLOCK_K, BLOCK) slabs of columns ti and tj; rows of a are the reduction.
            left = tl.load(a + kk[:, None] * s_ar + rows[None, :] * s_ac,
                           mask=(kk[:, None] < depth) & (rows[None, :] < side), other=0.0)
            right = tl.load(a + kk[:, None] * s_ar + cols[None, :] * s_ac,
                            mask=(kk[:, None] < depth) & (cols[None, :] < side), other=0.0)
            acc = dot(tl.trans(left), right, acc, INTERPRET)
        else:
            left = tl.load(a + rows[:, None] * s_ar + kk[None, :] * s_ac,
                           mask=(rows[:, None] < side) & (kk[None, :] < depth), other=0.0)
            right = tl.load(a + cols[:, None] * s_ar + kk[None, :] * s_ac,
                            mask=(cols[:, None] < side) & (kk[None, :] < depth), other=0.0)
            acc = dot(left, tl.trans(right), acc, INTERPRET)
    mask = (rows[:, None] < side) & (cols[None, :] < side)
    if ADD_INPUT:
        a_tile = tl.load(a + rows[:, None] * s_ar + cols[None, :] * s_ac, mask=mask, other=0.0)
        acc = tl.cast(alpha, tl.float32) * acc + tl.cast(beta, tl.float32) * a_tile.to(tl.float32)
    tile = cast(acc, out.dtype.element_ty, INTERPRET)
    tl.store(out + rows[:, None] * s_or + cols[None, :] * s_oc, tile, mask=mask)
    if ti != tj:
        tl.store(out + cols[:, None] * s_or + rows[None, :] * s_oc, tl.trans(tile), mask=tl.trans(mask))


def _launch(a: torch.Tensor, out: torch.Tensor, gram_of_columns: bool, alpha=1.0, beta=0.0,
            add_input=False) -> None:
    a3 = a if a.ndim == 3 else a.unsqueeze(0)
    o3 = out if out.ndim == 3 else out.unsqueeze(0)
    n, r, c = a3.shape
    side, depth = (c, r) if gram_of_columns else (r, c)
    if n == 0 or side == 0:
        return
    if depth == 0:
        # Empty reduction: the product is zero (and beta·a still applies).
        o3.copy_(a3 * beta if add_input else torch.zeros_like(o3))
        return
    grid = record_launch("symmetric_product_kernel", (triangle_tiles(side), n))
    symmetric_product_kernel[grid](
        a3, o3, side, depth, *a3.stride(), *o3.stride(), float(alpha), float(beta),
        GRAM_OF_COLUMNS=gram_of_columns, ADD_INPUT=add_input,
        BLOCK=BLOCK, BLOCK_K=BLOCK_K, INTERPRET=INTERPRET,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )


def xxt(a: torch.Tensor, out: torch.Tensor) -> None:
    """out = a·aᵀ (a (…, M, K), out (…, M, M))."""
    _launch(a, out, gram_of_columns=False)


def xtx(a: torch.Tensor, out: torch.Tensor) -> None:
    """out = aᵀ·a (a (…, M, K), out (…, K, K))."""
    _launch(a, out, gram_of_columns=True)


def ba_plus_caa(a: torch.Tensor, alpha: float, beta: float, out: torch.Tensor) -> None:
    """out = alpha·a·aᵀ + beta·a for square symmetric a; the mirrored tile reuses a's lower tile."""
    _launch(a, out, gram_of_columns=False, alpha=alpha, beta=beta, add_input=True)
