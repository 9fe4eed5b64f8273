"""Each micro-batch's forward and backward replayed as two CUDA graphs.

Why: the compiled step launches thousands of kernels, and its host finishes not long before the
GPU does, so any profiler's per-launch cost lengthens the step itself. A graph replay costs the
host one launch, so the GPU stays the critical path with or without a profiler
(benchmarks/RESULTS.md has the launch counts and timings).

One pair of graphs is kept per key (windows, sequence length and input shapes; the caller
builds it). The first micro-batch with a new key runs eagerly, on the capture stream so that it
also warms that stream up, and is then captured; later ones copy their inputs into the pair's
static tensors and replay. The backward accumulates into the parameters' existing ``.grad``
tensors in place, so those must outlive the graphs: the optimizer zeroes them instead of
dropping them (``NorMuonAndAdam(keep_grads=True)``). If any ``.grad`` is replaced anyway, every
pair is dropped and captured again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.profiler import record_function


class CudaCapture:
    """Records work into CUDA graphs that share one memory pool, on one side stream.

    The pairs share the pool safely because they are replayed one after another and only the
    tensors passed from a forward to its own backward live across a replay.
    """

    def __init__(self, device):
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()

    def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` eagerly on the capture stream, ordered after the work queued before it."""
        current = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            fn()
        current.wait_stream(self.stream)

    def record(self, fn: Callable[[], None]):
        """A graph of the kernels ``fn`` launches (nothing runs now); ``.replay()`` runs them."""
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(current)
        # thread_local: the loader's prefetch thread may pin memory while a capture is under way.
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            fn()
        current.wait_stream(self.stream)
        return graph


class _Pair:
    def __init__(self, inputs: tuple[torch.Tensor, ...], grads: tuple, forward, backward):
        self.inputs = inputs          # static copies the graphs read
        self.grads = grads            # the .grad tensors (or None) the backward accumulates into
        self.forward, self.backward = forward, backward


class MicroBatchGraphs:
    """Forward/backward graph pairs of a model's micro-batches, keyed by the caller.

    params: the parameters whose ``.grad`` the backward accumulates into.
    capture: how graphs are made (``CudaCapture`` on a CUDA device; tests pass a stand-in).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], capture):
        self.params = list(params)
        self.capture = capture
        self.pairs: dict = {}
        self.replays = 0
        self.captures = 0

    def _grads(self) -> tuple:
        return tuple(p.grad for p in self.params)

    def _current(self, pair: _Pair) -> bool:
        return all(p.grad is g for p, g in zip(self.params, pair.grads))

    def micro_batch(self, key, inputs: tuple[torch.Tensor, ...],
                    loss_fn: Callable[..., torch.Tensor]) -> None:
        """Forward and backward of one micro-batch: ``loss_fn(*inputs).backward()``.

        ``loss_fn`` must depend on nothing that changes between calls with the same ``key`` other
        than ``inputs`` and tensors it updates in place (weights, buffers).
        """
        pair = self.pairs.get(key)
        if pair is not None and not self._current(pair):
            self.pairs.clear()            # some .grad was replaced: every pair writes to stale ones
            pair = None
        if pair is not None:
            for static, new in zip(pair.inputs, inputs):
                static.copy_(new, non_blocking=True)
            with record_function("forward"):
                pair.forward.replay()
            with record_function("backward"):
                pair.backward.replay()
            self.replays += 1
            return

        def eager():
            with record_function("forward"):
                loss = loss_fn(*inputs)
            with record_function("backward"):
                loss.backward()

        self.capture.run(eager)
        self.pairs[key] = self._record(inputs, loss_fn)

    def _record(self, inputs, loss_fn) -> _Pair:
        static = tuple(t.clone() for t in inputs)
        # The loss passes from the forward to the backward (held only between the two).
        held = {}

        def forward():
            held["loss"] = loss_fn(*static)

        def backward():
            held.pop("loss").backward()

        fwd = self.capture.record(forward)
        bwd = self.capture.record(backward)
        self.captures += 1
        return _Pair(static, self._grads(), fwd, bwd)

    def clear(self) -> None:
        """Drop every pair (their memory pool goes with the last graph)."""
        self.pairs.clear()
