"""Tiled transposes: dst = srcᵀ and dst += srcᵀ for 2-D tensors of any strides.

A program loads a (BLOCK_M, BLOCK_N) tile of src along its fast axis and stores its transpose
along dst's fast axis, so both sides move whole cache lines in 16-byte vectors; the register
shuffle between the two layouts goes through shared memory. PyTorch's strided
``dst.copy_(src.T)`` instead reads or writes one element per 32-byte sector, and its ~75k tiny
blocks fill every SM (stalling NCCL kernels that share them).

Launch configurations come from ``CONFIGS``, keyed by element size, and both entry points take an
explicit ``config`` (the tuning script sweeps them). A config holds BLOCK_M, BLOCK_N, num_warps,
M_FASTEST (tiles numbered down src's columns first, i.e. along dst's rows, or across src's rows
first), PROGRAMS_PER_SM (0: one program per tile; k > 0: k programs per SM walk the tiles, with
the loads of the next tiles issued num_stages − 1 tiles ahead through shared memory) and
num_stages.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast, num_sms

if INTERPRET:
    _SMALL = dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, M_FASTEST=True, PROGRAMS_PER_SM=0, num_stages=1)
    CONFIGS = {"other": {"copy": _SMALL, "add": _SMALL}}
else:
    # {element size in bytes or "other": {"copy"/"add": config}}; dev/tune_kernels.py prints these.
    CONFIGS = {
        2: {
            "copy": dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, M_FASTEST=True, PROGRAMS_PER_SM=0, num_stages=1),
            "add": dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, M_FASTEST=True, PROGRAMS_PER_SM=0, num_stages=1),
        },
        "other": {
            "copy": dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, M_FASTEST=True, PROGRAMS_PER_SM=0, num_stages=1),
            "add": dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, M_FASTEST=True, PROGRAMS_PER_SM=0, num_stages=1),
        },
    }


def config_for(op: str, element_size: int) -> dict:
    """The launch configuration of ``op`` ("copy" or "add") for elements of this many bytes."""
    return CONFIGS.get(element_size, CONFIGS["other"])[op]


@triton.jit
def _transpose_tile(src, dst, t, M, N, s_m, s_n, d_n, d_m, ADD: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, M_FASTEST: tl.constexpr,
                    INTERPRET: tl.constexpr):
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    if M_FASTEST:
        tm, tn = t % tiles_m, t // tiles_m
    else:
        tm, tn = t // tiles_n, t % tiles_n
    rows = tm.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tn.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    mask_t = tl.trans(mask)
    # src is read once: keep it from pushing dst's lines (read, then written) out of L2.
    tile = tl.load(src + rows[:, None] * s_m + cols[None, :] * s_n, mask=mask, eviction_policy="evict_first")
    dst_ptrs = dst + cols[:, None] * d_n + rows[None, :] * d_m
    if ADD:
        acc = tl.load(dst_ptrs, mask=mask_t).to(tl.float32) + tl.trans(tile).to(tl.float32)
        tl.store(dst_ptrs, cast(acc, dst.dtype.element_ty, INTERPRET), mask=mask_t)
    else:
        tl.store(dst_ptrs, tl.trans(tile), mask=mask_t)


@triton.jit
def transpose_kernel(src, dst, M, N, s_m, s_n, d_n, d_m, ADD: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, M_FASTEST: tl.constexpr,
                     PERSISTENT: tl.constexpr, STAGES: tl.constexpr, INTERPRET: tl.constexpr):
    if PERSISTENT:
        tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
        for t in tl.range(tl.program_id(0), tiles, tl.num_programs(0), num_stages=STAGES):
            _transpose_tile(src, dst, t, M, N, s_m, s_n, d_n, d_m, ADD, BLOCK_M, BLOCK_N, M_FASTEST, INTERPRET)
    else:
        _transpose_tile(src, dst, tl.program_id(0), M, N, s_m, s_n, d_n, d_m, ADD, BLOCK_M, BLOCK_N,
                        M_FASTEST, INTERPRET)


def _launch(op: str, src: torch.Tensor, dst: torch.Tensor, config: dict | None) -> None:
    M, N = src.shape
    if M == 0 or N == 0:
        return
    cfg = config or config_for(op, src.element_size())
    tiles = triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"])
    programs = min(tiles, cfg["PROGRAMS_PER_SM"] * num_sms(src)) if cfg["PROGRAMS_PER_SM"] else tiles
    # Recorded under one name per operation, which the benchmarks read.
    grid = record_launch(f"transpose_{op}_kernel", (programs,))
    transpose_kernel[grid](
        src, dst, M, N, src.stride(0), src.stride(1), dst.stride(0), dst.stride(1),
        ADD=op == "add", BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], M_FASTEST=cfg["M_FASTEST"],
        PERSISTENT=bool(cfg["PROGRAMS_PER_SM"]), STAGES=cfg["num_stages"], INTERPRET=INTERPRET,
        num_warps=cfg["num_warps"])


def transpose_copy(src: torch.Tensor, dst: torch.Tensor, config: dict | None = None) -> None:
    """dst (N, M) = src (M, N)ᵀ; ``config`` overrides the table's."""
    _launch("copy", src, dst, config)


def transpose_add(src: torch.Tensor, dst: torch.Tensor, config: dict | None = None) -> None:
    """dst (N, M) += src (M, N)ᵀ, summed in fp32 and rounded once to dst's dtype."""
    _launch("add", src, dst, config)
