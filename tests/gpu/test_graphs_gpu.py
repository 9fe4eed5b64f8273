"""CudaCapture on the GPU: a compiled model's forward and backward, captured and replayed.

The CPU tests (tests/test_graphs.py) check the bookkeeping with a stand-in for the capture; this
checks the real one. The whole trainer's graphed steps are compared with eager ones by
``benchmarks/bench_dilation.py --check-graphs N`` (dev/LOG.md, fifth session).

Run on the lent GPU machine: pytest -m gpu tests/gpu/test_graphs_gpu.py
"""

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_replays_accumulate_what_eager_micro_batches_accumulate():
    from speedtrace.trainer.graphs import CudaCapture, MicroBatchGraphs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1)).cuda()
    forward = torch.compile(model, fullgraph=True, dynamic=False)
    params = list(model.parameters())

    def loss_fn(x, y):
        return ((forward(x).squeeze(-1) - y) ** 2).mean()

    batches = [(torch.randn(32, 64, device="cuda"), torch.randn(32, device="cuda")) for _ in range(4)]
    for x, y in batches:
        loss_fn(x, y).backward()
    expected = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)

    graphs = MicroBatchGraphs(params, CudaCapture(torch.device("cuda")))
    for x, y in batches:
        graphs.micro_batch("k", (x, y), loss_fn)
    torch.cuda.synchronize()
    assert (graphs.captures, graphs.replays) == (1, 3)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)

    # The optimizer's way between steps: zero in place; then every micro-batch is a replay.
    kept = [p.grad for p in params]
    for g in kept:
        g.zero_()
    for x, y in batches:
        graphs.micro_batch("k", (x, y), loss_fn)
    torch.cuda.synchronize()
    assert (graphs.captures, graphs.replays) == (1, 7)
    assert all(p.grad is g for p, g in zip(params, kept))
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)
