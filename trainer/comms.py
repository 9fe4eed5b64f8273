"""The optimizer's collectives: the record's async NCCL calls, and gloo stand-ins for CPU runs.

Each call launches asynchronously and returns a ``Pending``; ``Pending.wait()`` blocks until the
result is usable and returns it. CUDA tensors take the record's path: ReduceOp.AVG collectives
kept as ``.get_future()``. CPU tensors go to gloo, which (depending on the PyTorch version) lacks
ReduceOp.AVG, reduce-scatter, single-tensor all-gather or bf16 support, so there every call is
built from the ops gloo has always had (all_reduce SUM, list all_gather, all_to_all_single) on an
fp32 copy, and the averaging and slicing happen in ``wait()``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

# PyTorch 2.13 renamed the single-tensor collectives; the GPU image's older PyTorch has only the
# old names. Same signatures.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class Pending:
    """An in-flight collective: ``wait()`` finishes it (once) and returns its result."""

    def __init__(self, finish: Callable[[], torch.Tensor]):
        self._finish = finish
        self._result: torch.Tensor | None = None
        self._done = False

    @classmethod
    def ready(cls, value: torch.Tensor) -> "Pending":
        """A result that needed no communication."""
        return cls(lambda: value)

    def wait(self) -> torch.Tensor:
        if not self._done:
            self._result = self._finish()
            self._done = True
        return self._result


def _after(future, value: torch.Tensor) -> Pending:
    def finish():
        future.wait()
        return value

    return Pending(finish)


class Comms:
    """Collectives over one process group for one rank (``group=None``: the default group)."""

    def __init__(self, rank: int, world_size: int, group=None):
        self.rank = rank
        self.world_size = world_size
        self.group = group

    def all_reduce_avg(self, t: torch.Tensor) -> Pending:
        """Average ``t`` across ranks, in place; the result is ``t``."""
        if t.is_cuda:
            fut = dist.all_reduce(t, op=dist.ReduceOp.AVG, group=self.group, async_op=True).get_future()
            return _after(fut, t)
        buf = t.to(torch.float32, copy=True)
        work = dist.all_reduce(buf, group=self.group, async_op=True)

        def finish():
            work.wait()
            t.copy_(buf.div_(self.world_size))
            return t

        return Pending(finish)

    def reduce_scatter_avg(self, full: torch.Tensor) -> Pending:
        """Average ``full`` across ranks and keep this rank's block of rows (dim 0)."""
        rows = full.shape[0] // self.world_size
        if full.is_cuda:
            chunk = full.new_empty((rows, *full.shape[1:]))
            fut = _reduce_scatter(chunk, full.contiguous(), op=dist.ReduceOp.AVG, group=self.group,
                                  async_op=True).get_future()
            return _after(fut, chunk)
        buf = full.to(torch.float32, copy=True).contiguous()
        work = dist.all_reduce(buf, group=self.group, async_op=True)

        def finish():
            work.wait()
            mine = buf[self.rank * rows:(self.rank + 1) * rows]
            return mine.div_(self.world_size).to(full.dtype)

        return Pending(finish)

    def all_gather(self, full: torch.Tensor, chunk: torch.Tensor) -> Pending:
        """Fill ``full`` (contiguous) with every rank's ``chunk`` stacked along dim 0."""
        if full.is_cuda:
            fut = _all_gather(full, chunk.contiguous(), group=self.group, async_op=True).get_future()
            return _after(fut, full)
        parts = [torch.empty(chunk.shape, dtype=torch.float32) for _ in range(self.world_size)]
        work = dist.all_gather(parts, chunk.to(torch.float32, copy=True).contiguous(),
                               group=self.group, async_op=True)

        def finish():
            work.wait()
            full.copy_(torch.cat(parts).view(full.shape))
            return full

        return Pending(finish)

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor,
                   out_splits: list[int] | None = None, in_splits: list[int] | None = None) -> Pending:
        """all_to_all_single of 1-D tensors with the given split sizes; the result is ``out``."""
        if out.is_cuda or not out.is_floating_point() or out.dtype == torch.float32:
            work = dist.all_to_all_single(out, inp, output_split_sizes=out_splits,
                                          input_split_sizes=in_splits, group=self.group, async_op=True)
            return _after(work.get_future() if out.is_cuda else work, out)
        buf = torch.empty(out.shape, dtype=torch.float32)
        work = dist.all_to_all_single(buf, inp.to(torch.float32), output_split_sizes=out_splits,
                                      input_split_sizes=in_splits, group=self.group, async_op=True)

        def finish():
            work.wait()
            return out.copy_(buf)

        return Pending(finish)
