"""Tiled transposes: dst = srcᵀ and dst += srcᵀ for 2-D tensors of any strides.

A program loads one (BLOCK_M, BLOCK_N) tile of src along its fast axis and stores its transpose
along dst's fast axis, so both sides move whole cache lines; the register shuffle between the two
layouts goes through shared memory. PyTorch's strided ``dst.copy_(src.T)`` instead reads or writes
one element per 32-byte sector, and its ~75k tiny blocks fill every SM (stalling NCCL kernels
that share them). On CUDA the tile shape is autotuned once per shape from a handful of configs;
under the interpreter one small config keeps the CPU run short.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import interpreting, record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast

if interpreting():
    CONFIGS = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=4)]
else:
    CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=2)
        for bm, bn, w in ((32, 32, 4), (64, 64, 4), (64, 128, 4), (128, 64, 4), (64, 128, 8),
                          (128, 128, 8))
    ]


@triton.jit
def _tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row and column indices of this program's tile of src, and its in-bounds mask."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    return rows, cols, (rows[:, None] < M) & (cols[None, :] < N)


@triton.autotune(configs=CONFIGS, key=["M", "N"])
@triton.jit
def transpose_copy_kernel(src, dst, M, N, s_m, s_n, d_n, d_m,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask = _tile(M, N, BLOCK_M, BLOCK_N)
    tile = tl.load(src + rows[:, None] * s_m + cols[None, :] * s_n, mask=mask)
    tl.store(dst + cols[:, None] * d_n + rows[None, :] * d_m, tl.trans(tile), mask=tl.trans(mask))


# Tuning runs the kernel several times on the real dst: restore it so the sum is taken once.
@triton.autotune(configs=CONFIGS, key=["M", "N"], restore_value=["dst"])
@triton.jit
def transpose_add_kernel(src, dst, M, N, s_m, s_n, d_n, d_m,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr):
    rows, cols, mask = _tile(M, N, BLOCK_M, BLOCK_N)
    tile = tl.load(src + rows[:, None] * s_m + cols[None, :] * s_n, mask=mask)
    dst_ptrs = dst + cols[:, None] * d_n + rows[None, :] * d_m
    mask_t = tl.trans(mask)
    acc = tl.load(dst_ptrs, mask=mask_t).to(tl.float32) + tl.trans(tile).to(tl.float32)
    tl.store(dst_ptrs, cast(acc, dst.dtype.element_ty, INTERPRET), mask=mask_t)


def _launch(kernel, src: torch.Tensor, dst: torch.Tensor, **flags) -> None:
    M, N = src.shape
    if M == 0 or N == 0:
        return
    name = kernel.fn.__name__

    def grid(meta):
        return record_launch(name, (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"])))

    kernel[grid](src, dst, M, N, src.stride(0), src.stride(1), dst.stride(0), dst.stride(1), **flags)


def transpose_copy(src: torch.Tensor, dst: torch.Tensor) -> None:
    """dst (N, M) = src (M, N)ᵀ."""
    _launch(transpose_copy_kernel, src, dst)


def transpose_add(src: torch.Tensor, dst: torch.Tensor) -> None:
    """dst (N, M) += src (M, N)ᵀ, summed in fp32 and rounded once to dst's dtype."""
    _launch(transpose_add_kernel, src, dst, INTERPRET=INTERPRET)
