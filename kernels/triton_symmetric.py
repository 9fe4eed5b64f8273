"""Symmetric products for Polar Express: a·aᵀ, aᵀ·a and alpha·a·aᵀ + beta·a, batched.

The result is symmetric, so only output blocks on and below the diagonal are computed: a program
computes PAIR neighbouring BLOCK×BLOCK blocks of one block row (PAIR = 2 loads the shared row
operand once for two blocks, a quarter less L2 traffic per block, which matters for the short
reductions of the attention bank), stores each block it needs and its transpose in the mirrored
position. A block above the
diagonal, which PAIR = 2 computes next to a diagonal block, is dropped; every output element is
written exactly once.

Launch configurations come from ``CONFIGS``, keyed by product and reduction depth, and every entry
point takes an explicit ``config`` (the tuning script sweeps them). A config holds BLOCK, BLOCK_K,
PAIR, num_warps, num_stages and PROGRAMS_PER_SM: 0 launches one program per tile (a 2-D grid of
tiles × batch); k > 0 launches k programs per SM that walk all tiles of the batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast, dot, num_sms

if INTERPRET:
    # Small tiles so that small test shapes still span several tiles (tl.dot needs >= 16).
    _SMALL = dict(BLOCK=16, BLOCK_K=16, PAIR=1, num_warps=4, num_stages=1, PROGRAMS_PER_SM=0)
    CONFIGS = {kind: {"other": _SMALL} for kind in ("xxt", "xtx", "ba_plus_caa")}
else:
    # {product: {reduction depth or "other": config}}; dev/tune_kernels.py prints these (the best
    # of its sweep on an H200 at the trainer's shapes).
    # Three stages of 128×64 slabs take 96 KiB of shared memory, so two programs share an SM and
    # one's epilogue overlaps the other's loads (the record's four stages allow one).
    CONFIGS = {
        "xxt": {
            768: dict(BLOCK=128, BLOCK_K=64, PAIR=1, num_warps=8, num_stages=3, PROGRAMS_PER_SM=0),
            "other": dict(BLOCK=128, BLOCK_K=64, PAIR=1, num_warps=8, num_stages=3, PROGRAMS_PER_SM=0),
        },
        "xtx": {
            "other": dict(BLOCK=128, BLOCK_K=64, PAIR=1, num_warps=4, num_stages=3, PROGRAMS_PER_SM=0),
        },
        "ba_plus_caa": {
            "other": dict(BLOCK=128, BLOCK_K=64, PAIR=1, num_warps=8, num_stages=3, PROGRAMS_PER_SM=0),
        },
    }


def config_for(kind: str, depth: int) -> dict:
    """The launch configuration of product ``kind`` for a reduction of length ``depth``."""
    table = CONFIGS[kind]
    return table.get(depth, table["other"])


def triangle_tiles(side: int, block: int, pair: int = 1) -> int:
    """Programs' worth of tiles per matrix: block row i needs i // pair + 1 tiles of pair blocks."""
    nb = triton.cdiv(side, block)
    return sum(i // pair + 1 for i in range(nb))


@triton.jit
def _tile_position(t, PAIR: tl.constexpr):
    """(block row, first block column) of tile t, tiles numbered row by row.

    PAIR = 1: row i holds i + 1 tiles, so t = i·(i+1)/2 + j. PAIR = 2: rows 2q and 2q+1 hold
    q + 1 tiles each, so the pair of rows q starts at t = q·(q+1).
    """
    if PAIR == 1:
        i = ((tl.sqrt((8 * t + 1).to(tl.float32)) - 1) * 0.5).to(tl.int32)
        # fp32 sqrt can land one off for large t: nudge into place.
        i = tl.where((i + 1) * (i + 2) // 2 <= t, i + 1, i)
        i = tl.where(i * (i + 1) // 2 > t, i - 1, i)
        return i, t - i * (i + 1) // 2
    else:
        q = ((tl.sqrt((4 * t + 1).to(tl.float32)) - 1) * 0.5).to(tl.int32)
        q = tl.where((q + 1) * (q + 2) <= t, q + 1, q)
        q = tl.where(q * (q + 1) > t, q - 1, q)
        r = t - q * (q + 1)
        return 2 * q + r // (q + 1), 2 * (r % (q + 1))


@triton.jit
def _store_block(a, out, acc, bi, bj, side, s_ar, s_ac, s_or, s_oc, alpha, beta,
                 ADD_INPUT: tl.constexpr, BLOCK: tl.constexpr, INTERPRET: tl.constexpr):
    """Store block (bi, bj) of the product and its mirror; blocks above the diagonal are dropped."""
    if bj <= bi:
        rows = bi * BLOCK + tl.arange(0, BLOCK)
        cols = bj * BLOCK + tl.arange(0, BLOCK)
        mask = (rows[:, None] < side) & (cols[None, :] < side)
        if ADD_INPUT:
            a_tile = tl.load(a + rows[:, None] * s_ar + cols[None, :] * s_ac, mask=mask, other=0.0)
            acc = tl.cast(alpha, tl.float32) * acc + tl.cast(beta, tl.float32) * a_tile.to(tl.float32)
        tile = cast(acc, out.dtype.element_ty, INTERPRET)
        tl.store(out + rows[:, None] * s_or + cols[None, :] * s_oc, tile, mask=mask)
        if bj < bi:
            # a is symmetric, so beta·a's mirror is the transposed tile as well.
            tl.store(out + cols[:, None] * s_or + rows[None, :] * s_oc, tl.trans(tile), mask=tl.trans(mask))


@triton.jit
def _product_tile(a, out, tile, side, depth, s_ar, s_ac, s_or, s_oc, alpha, beta,
                  GRAM_OF_COLUMNS: tl.constexpr, ADD_INPUT: tl.constexpr, BLOCK: tl.constexpr,
                  BLOCK_K: tl.constexpr, PAIR: tl.constexpr, INTERPRET: tl.constexpr):
    bi, bj = _tile_position(tile, PAIR)
    WIDTH: tl.constexpr = BLOCK * PAIR
    rows = bi * BLOCK + tl.arange(0, BLOCK)
    cols = bj * BLOCK + tl.arange(0, WIDTH)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK, WIDTH), dtype=tl.float32)
    for k0 in range(0, depth, BLOCK_K):
        kk = k0 + ks
        if GRAM_OF_COLUMNS:
            # Slabs of columns bi and bj of a; a's rows are the reduction.
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
    if PAIR == 1:
        _store_block(a, out, acc, bi, bj, side, s_ar, s_ac, s_or, s_oc, alpha, beta,
                     ADD_INPUT, BLOCK, INTERPRET)
    else:
        first, second = tl.split(tl.permute(tl.reshape(acc, (BLOCK, 2, BLOCK)), (0, 2, 1)))
        _store_block(a, out, first, bi, bj, side, s_ar, s_ac, s_or, s_oc, alpha, beta,
                     ADD_INPUT, BLOCK, INTERPRET)
        _store_block(a, out, second, bi, bj + 1, side, s_ar, s_ac, s_or, s_oc, alpha, beta,
                     ADD_INPUT, BLOCK, INTERPRET)


@triton.jit
def _symmetric_product(
    a, out, side, depth, tiles, batches,
    s_ab, s_ar, s_ac, s_ob, s_or, s_oc,
    alpha, beta,
    GRAM_OF_COLUMNS: tl.constexpr,   # True: aᵀ·a (side = a's columns); False: a·aᵀ
    ADD_INPUT: tl.constexpr,         # True: alpha·a·aᵀ + beta·a (a square and symmetric)
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PAIR: tl.constexpr,
    PERSISTENT: tl.constexpr, INTERPRET: tl.constexpr,
):
    if PERSISTENT:
        # Flattening lets the next tile's first loads overlap this tile's stores.
        for t in tl.range(tl.program_id(0), tiles * batches, tl.num_programs(0), flatten=True):
            batch = (t // tiles).to(tl.int64)
            _product_tile(a + batch * s_ab, out + batch * s_ob, t % tiles, side, depth,
                          s_ar, s_ac, s_or, s_oc, alpha, beta, GRAM_OF_COLUMNS, ADD_INPUT,
                          BLOCK, BLOCK_K, PAIR, INTERPRET)
    else:
        batch = tl.program_id(1).to(tl.int64)
        _product_tile(a + batch * s_ab, out + batch * s_ob, tl.program_id(0), side, depth,
                      s_ar, s_ac, s_or, s_oc, alpha, beta, GRAM_OF_COLUMNS, ADD_INPUT,
                      BLOCK, BLOCK_K, PAIR, INTERPRET)


# One entry kernel per product, so that a trace names what ran (the parent's tall path shows
# xxt_kernel where the record shows xtx_kernel); all three share _symmetric_product.
@triton.jit
def xxt_kernel(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
               BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PAIR: tl.constexpr,
               PERSISTENT: tl.constexpr, INTERPRET: tl.constexpr):
    _symmetric_product(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
                       False, False, BLOCK, BLOCK_K, PAIR, PERSISTENT, INTERPRET)


@triton.jit
def xtx_kernel(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
               BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PAIR: tl.constexpr,
               PERSISTENT: tl.constexpr, INTERPRET: tl.constexpr):
    _symmetric_product(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
                       True, False, BLOCK, BLOCK_K, PAIR, PERSISTENT, INTERPRET)


@triton.jit
def ba_plus_caa_kernel(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
                       BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PAIR: tl.constexpr,
                       PERSISTENT: tl.constexpr, INTERPRET: tl.constexpr):
    _symmetric_product(a, out, side, depth, tiles, batches, s_ab, s_ar, s_ac, s_ob, s_or, s_oc, alpha, beta,
                       False, True, BLOCK, BLOCK_K, PAIR, PERSISTENT, INTERPRET)


KERNELS = {"xxt": xxt_kernel, "xtx": xtx_kernel, "ba_plus_caa": ba_plus_caa_kernel}


def _launch(kind: str, a: torch.Tensor, out: torch.Tensor, config: dict | None, alpha=1.0, beta=0.0) -> None:
    gram_of_columns, add_input = kind == "xtx", kind == "ba_plus_caa"
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
    cfg = config or config_for(kind, depth)
    tiles = triangle_tiles(side, cfg["BLOCK"], cfg["PAIR"])
    if cfg["PROGRAMS_PER_SM"]:
        grid = (min(tiles * n, cfg["PROGRAMS_PER_SM"] * num_sms(a3)), 1)
    else:
        grid = (tiles, n)
    record_launch(f"{kind}_kernel", grid)
    KERNELS[kind][grid](
        a3, o3, side, depth, tiles, n, *a3.stride(), *o3.stride(), float(alpha), float(beta),
        BLOCK=cfg["BLOCK"], BLOCK_K=cfg["BLOCK_K"], PAIR=cfg["PAIR"],
        PERSISTENT=bool(cfg["PROGRAMS_PER_SM"]), INTERPRET=INTERPRET,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )


def xxt(a: torch.Tensor, out: torch.Tensor, config: dict | None = None) -> None:
    """out = a·aᵀ (a (…, M, K), out (…, M, M)); ``config`` overrides the table's."""
    _launch("xxt", a, out, config)


def xtx(a: torch.Tensor, out: torch.Tensor, config: dict | None = None) -> None:
    """out = aᵀ·a (a (…, M, K), out (…, K, K)); ``config`` overrides the table's."""
    _launch("xtx", a, out, config)


def ba_plus_caa(a: torch.Tensor, alpha: float, beta: float, out: torch.Tensor, config: dict | None = None) -> None:
    """out = alpha·a·aᵀ + beta·a for square symmetric a; ``config`` overrides the table's."""
    _launch("ba_plus_caa", a, out, config, alpha=alpha, beta=beta)
