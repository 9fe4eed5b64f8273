"""The MLP's fused GEMM: pre = a·bᵀ with a ReLU² epilogue (forward) or its derivative (backward).

Forward mode writes pre (a·bᵀ rounded to bf16) and post = relu(pre)². Backward mode reads pre and
writes 2·(a·bᵀ)·relu(pre), where a is the output gradient and b the second weight, i.e. the
gradient with respect to pre. Two variants compute the same thing:
- "tma" (Hopper, sm_90+): persistent (one program per SM walking tiles with stride #SMs), every
  load and store through tensor descriptors built on the device; the 128×256 accumulator is
  written as two 128×128 halves to halve the epilogue's registers and shared memory.
- "pointer": one program per tile with ordinary pointer loads, for older GPUs; the interpreter
  runs either (tests cover both).

Both launch through ``torch.library.wrap_triton`` (the ops are ``triton_op``s, kernels/ops.py), so
torch.compile writes the launch into its generated code: no dispatcher and no Python wrapper per
call, which keeps the host time of the MLP layers down in a step that is close to host-bound. That
is also why the descriptors are made on the device: the tracing of wrap_triton cannot carry host
``TensorDescriptor`` arguments.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import record_launch
from speedtrace.kernels.triton_common import INTERPRET, cast, dot, num_sms

# Launch configurations per path and direction; an explicit ``config`` overrides them (the tuning
# script sweeps the "tma" ones). The TMA kernel stores BLOCK_N in two halves.
if INTERPRET:
    _TMA = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
    _POINTER = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
    CONFIGS = {"tma": {"forward": _TMA, "backward": _TMA}, "pointer": {"forward": _POINTER, "backward": _POINTER}}
else:
    CONFIGS = {
        "tma": {
            "forward": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=4, num_warps=8, num_stages=4),
            "backward": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=16, num_warps=8, num_stages=3),
        },
        "pointer": {
            "forward": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
            "backward": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
        },
    }


@triton.jit
def _grouped_tile(tile, num_m, num_n, GROUP_M: tl.constexpr):
    """Tile index → (tile row, tile col), GROUP_M tile rows at a time so b stays in L2."""
    per_group = GROUP_M * num_n
    first_m = (tile // per_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % group_rows, (tile % per_group) // group_rows


@triton.jit
def _epilogue(acc, pre, FORWARD: tl.constexpr, INTERPRET: tl.constexpr, BF16: tl.constexpr):
    """Forward: (pre, relu(pre)²). Backward: (2·acc·relu(pre), unused); bf16, one rounding each.

    With ``BF16`` the arithmetic after rounding acc is done in bf16 (packed on the GPU): the
    product of two bf16 values is exact before its one rounding, and 2·c is exact, so the
    results equal the fp32 path's bit for bit, in fewer instructions. The interpreter always
    takes the fp32 path, whose bf16 rounding it gets right only through ``cast``.
    """
    # Every return of a Triton function must have the same types, whichever branch a constexpr
    # takes: two bf16 tiles (the backward's second one is unused).
    if BF16 and not INTERPRET:
        c = acc.to(tl.bfloat16)
        if FORWARD:
            r = tl.maximum(c, 0)
            post = (r * r).to(tl.bfloat16)
            return c, post
        else:
            grad = (2 * c * tl.where(pre > 0, pre, 0)).to(tl.bfloat16)
            return grad, grad
    c = cast(acc, tl.bfloat16, INTERPRET).to(tl.float32)
    if FORWARD:
        r = tl.maximum(c, 0.0)
        return cast(c, tl.bfloat16, INTERPRET), cast(r * r, tl.bfloat16, INTERPRET)
    else:
        grad = cast(2.0 * c * tl.maximum(pre.to(tl.float32), 0.0), tl.bfloat16, INTERPRET)
        return grad, grad


@triton.jit
def linear_relu_square_tma_kernel(
    a, b, c, aux, M, N, K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr, FORWARD: tl.constexpr, INTERPRET: tl.constexpr, BF16_EPILOGUE: tl.constexpr,
):
    HALF: tl.constexpr = BLOCK_N // 2
    a_desc = tl.make_tensor_descriptor(a, [M, K], [K, 1], [BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(b, [N, K], [K, 1], [BLOCK_N, BLOCK_K])
    c_desc = tl.make_tensor_descriptor(c, [M, N], [N, 1], [BLOCK_M, HALF])
    aux_desc = tl.make_tensor_descriptor(aux, [M, N], [N, 1], [BLOCK_M, HALF])
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_SMS, flatten=True):
        tm, tn = _grouped_tile(tile, num_m, num_n, GROUP_M)
        om = tm * BLOCK_M
        on = tn * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            acc = dot(a_desc.load([om, k]), b_desc.load([on, k]).T, acc, INTERPRET)
        # Split the accumulator's columns into two halves, stored one after the other.
        halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1))
        left, right = tl.split(halves)
        if FORWARD:
            pre, post = _epilogue(left, left, True, INTERPRET, BF16_EPILOGUE)
            c_desc.store([om, on], pre)
            aux_desc.store([om, on], post)
            pre, post = _epilogue(right, right, True, INTERPRET, BF16_EPILOGUE)
            c_desc.store([om, on + HALF], pre)
            aux_desc.store([om, on + HALF], post)
        else:
            grad, _ = _epilogue(left, aux_desc.load([om, on]), False, INTERPRET, BF16_EPILOGUE)
            c_desc.store([om, on], grad)
            grad, _ = _epilogue(right, aux_desc.load([om, on + HALF]), False, INTERPRET,
                                  BF16_EPILOGUE)
            c_desc.store([om, on + HALF], grad)


@triton.jit
def linear_relu_square_pointer_kernel(
    a, b, c, aux, M, N, K, s_am, s_ak, s_bn, s_bk, s_cm, s_cn, s_xm, s_xn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FORWARD: tl.constexpr, INTERPRET: tl.constexpr,
):
    tm, tn = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = tm.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tn.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        a_tile = tl.load(a + rows[:, None] * s_am + kk[None, :] * s_ak,
                         mask=(rows[:, None] < M) & (kk[None, :] < K), other=0.0)
        b_tile = tl.load(b + cols[:, None] * s_bn + kk[None, :] * s_bk,
                         mask=(cols[:, None] < N) & (kk[None, :] < K), other=0.0)
        acc = dot(a_tile, tl.trans(b_tile), acc, INTERPRET)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    aux_ptrs = aux + rows[:, None] * s_xm + cols[None, :] * s_xn
    c_ptrs = c + rows[:, None] * s_cm + cols[None, :] * s_cn
    if FORWARD:
        pre, post = _epilogue(acc, acc, True, INTERPRET, True)
        tl.store(c_ptrs, pre, mask=mask)
        tl.store(aux_ptrs, post, mask=mask)
    else:
        grad, _ = _epilogue(acc, tl.load(aux_ptrs, mask=mask, other=0.0), False, INTERPRET, True)
        tl.store(c_ptrs, grad, mask=mask)


def default_path(a: torch.Tensor, b: torch.Tensor) -> str:
    """"tma" where the descriptor kernel can run (sm_90+ or the interpreter, rows 16-byte aligned:
    K and N multiples of 8 for bf16), else "pointer"."""
    aligned = a.shape[1] % 8 == 0 and b.shape[0] % 8 == 0
    hopper = a.is_cuda and torch.cuda.get_device_capability(a.device) >= (9, 0)
    if aligned and (hopper or INTERPRET) and hasattr(tl, "make_tensor_descriptor"):
        return "tma"
    return "pointer"


def _scratch(size: int, alignment: int, stream):
    # Device descriptors are written to global scratch memory that Triton asks the host for.
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _run(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, aux: torch.Tensor, forward: bool, path: str,
         config: dict | None = None):
    M, K = a.shape
    N = b.shape[0]
    if M == 0 or N == 0:
        return
    if path not in CONFIGS:
        raise ValueError(f"linear_relu_square: path must be 'tma' or 'pointer', got {path!r}")
    cfg = dict(config or CONFIGS[path]["forward" if forward else "backward"])
    launch = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
    tiles = triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"])
    if path == "tma":
        cfg.setdefault("BF16_EPILOGUE", True)   # False: the fp32 epilogue, same results (benchmarks)
        sms = num_sms(a)
        grid = record_launch("linear_relu_square_tma_kernel", (min(sms, tiles),))
        # The allocator is a context variable: set it on every launch, since autograd runs the
        # backward on another thread. Inductor's launcher sets its own for compiled graphs.
        triton.set_allocator(_scratch)
        torch.library.wrap_triton(linear_relu_square_tma_kernel)[grid](
            a, b, c, aux, M, N, K, **cfg, NUM_SMS=sms, FORWARD=forward, INTERPRET=INTERPRET, **launch)
    else:
        grid = record_launch("linear_relu_square_pointer_kernel", (tiles,))
        torch.library.wrap_triton(linear_relu_square_pointer_kernel)[grid](
            a, b, c, aux, M, N, K, *a.stride(), *b.stride(), *c.stride(), *aux.stride(),
            **cfg, FORWARD=forward, INTERPRET=INTERPRET, **launch)


def linear_relu_square_forward(x2d: torch.Tensor, w1: torch.Tensor, path: str | None = None,
                               config: dict | None = None):
    """(pre, post): pre = x2d·w1ᵀ (bf16) and post = relu(pre)², for x2d (M, K), w1 (N, K).

    ``config`` overrides the path's launch configuration in ``CONFIGS``."""
    x2d, w1 = x2d.contiguous(), w1.contiguous()
    pre = x2d.new_empty((x2d.shape[0], w1.shape[0]))
    post = torch.empty_like(pre)
    _run(x2d, w1, pre, post, True, path or default_path(x2d, w1), config)
    return pre, post


def relu_square_backward(grad2d: torch.Tensor, w2: torch.Tensor, pre: torch.Tensor,
                         path: str | None = None, config: dict | None = None) -> torch.Tensor:
    """dpre = 2·(grad2d·w2ᵀ)·relu(pre) (bf16), for grad2d (M, K), w2 (N, K), pre (M, N)."""
    grad2d, w2, pre = grad2d.contiguous(), w2.contiguous(), pre.contiguous()
    dpre = grad2d.new_empty((grad2d.shape[0], w2.shape[0]))
    _run(grad2d, w2, dpre, pre, False, path or default_path(grad2d, w2), config)
    return dpre
