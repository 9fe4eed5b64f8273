"""Which implementation runs: Triton on CUDA tensors (or anywhere under ``TRITON_INTERPRET=1``),
the PyTorch reference otherwise. ``last_backend()`` reports the choice of the latest kernel call.
"""

from __future__ import annotations

import os

import torch

_last_backend: str | None = None


def interpreting() -> bool:
    """True when Triton's CPU interpreter was asked for.

    Triton reads the variable when a kernel is decorated, so it must be set before the kernel
    modules of this package are first imported (they are imported on first use).
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(t: torch.Tensor, dtypes: tuple[torch.dtype, ...] | None = None) -> bool:
    """Whether a kernel given ``t`` should run its Triton implementation (and record the choice).

    ``dtypes``: the input dtypes the kernel is written for (the GEMMs: bf16); others get the
    reference, which keeps e.g. fp32 products at fp32 precision instead of Triton's tf32.
    """
    global _last_backend
    choice = (t.is_cuda or interpreting()) and (dtypes is None or t.dtype in dtypes)
    _last_backend = "triton" if choice else "torch"
    return choice


def last_backend() -> str | None:
    """"triton" or "torch": what the most recent kernel call of this package ran (None before any).

    Under torch.compile the choice is made when the compiled graph runs the op, so this stays
    meaningful for compiled callers.
    """
    return _last_backend


_launches: dict[str, tuple[int, ...]] = {}


def record_launch(kernel: str, grid: tuple[int, ...]) -> tuple[int, ...]:
    """Remember the grid a Triton kernel was launched with (tests and benchmarks read it)."""
    _launches[kernel] = tuple(int(g) for g in grid)
    return _launches[kernel]


def last_launch(kernel: str) -> tuple[int, ...] | None:
    """The grid of the latest launch of ``kernel`` (its Triton function's name), if any."""
    return _launches.get(kernel)
