"""Device functions shared by the kernels, with work-arounds for Triton's CPU interpreter.

Each takes a constexpr ``INTERPRET``: False on GPU, where the native instruction is used, True
under ``TRITON_INTERPRET=1``, where (Triton 3.9) three operations are wrong and are replaced:
- ``tl.dot`` of two bf16 operands returns garbage, so the operands are upcast to fp32;
- fp32 → bf16 truncates instead of rounding to nearest even, so the rounding is done on the bits;
- fp32 → float8e5 drops the rounding carry, so the value goes through fp16 (exact for e5m2's
  range) and its top byte is rounded on the bits, with ties decided against the fp32 value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from speedtrace.kernels._dispatch import interpreting

INTERPRET = interpreting()
INTERPRETER_SMS = 3   # off the GPU: a few "SMs", so that persistent programs walk several tiles


def num_sms(t: torch.Tensor) -> int:
    """SMs of t's GPU, which persistent grids are sized by; INTERPRETER_SMS off the GPU."""
    if t.is_cuda:
        return torch.cuda.get_device_properties(t.device).multi_processor_count
    return INTERPRETER_SMS


@triton.jit
def dot(a, b, acc, INTERPRET: tl.constexpr):
    """acc + a·b with fp32 accumulation."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def to_bf16(x, INTERPRET: tl.constexpr):
    """fp32 → bf16, round to nearest even."""
    if INTERPRET:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(tl.bfloat16)


@triton.jit
def to_e5m2(x, INTERPRET: tl.constexpr):
    """fp32 → float8e5 (e5m2), round to nearest even."""
    if INTERPRET:
        h = x.to(tl.float16)
        bits = h.to(tl.uint16, bitcast=True)
        nearest = (bits + 0x7F + ((bits >> 8) & 1)) >> 8
        # fp16 rounding may have landed exactly on an e5m2 midpoint: the fp32 value decides.
        mag_x = tl.abs(x)
        mag_h = tl.abs(h.to(tl.float32))
        tie = (bits & 0xFF) == 0x80
        up = (bits >> 8) + 1
        down = bits >> 8
        out = tl.where(tie & (mag_x > mag_h), up, tl.where(tie & (mag_x < mag_h), down, nearest))
        return out.to(tl.uint8).to(tl.float8e5, bitcast=True)
    return x.to(tl.float8e5)


@triton.jit
def cast(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """x.to(dtype), rounding to nearest even under the interpreter too."""
    if dtype == tl.bfloat16:
        return to_bf16(x.to(tl.float32), INTERPRET)
    elif dtype == tl.float8e5:
        return to_e5m2(x.to(tl.float32), INTERPRET)
    else:
        return x.to(dtype)
