"""CUDA-graph replays of the micro-batches (trainer.graphs), their bookkeeping checked on the CPU.

A stand-in for ``CudaCapture`` records a graph as the Python function it would capture, and a
replay calls that function again, as a CUDA graph replays the kernels it captured: it reads the
static inputs and whatever the function bound when it was recorded, and accumulates into the
gradients it saw then. A trainer with graphs must then train exactly as one without them.
"""

import pytest
import torch

from speedtrace.errors import SpeedtraceError
from speedtrace.trainer.graphs import MicroBatchGraphs
from speedtrace.trainer.optimizer import NorMuonAndAdam
from speedtrace.trainer.train import Trainer
from tests.test_train import assert_same, data_dir, optimizer_state, small_config, weights  # noqa: F401


class Rerun:
    """Records a function instead of kernels; a replay runs it again."""

    def __init__(self):
        self.recorded = 0

    def run(self, fn):
        fn()

    def record(self, fn):
        self.recorded += 1
        return type("Graph", (), {"replay": staticmethod(fn)})()


def test_graphed_training_equals_eager_across_a_stage_change(data_dir):  # noqa: F811
    # Steps 15..20 cross the transition at 18: windows, batch size and MTP length change there,
    # and both Adam's odd steps and NorMuon-only even steps run.
    cfg = small_config()
    plain = Trainer(cfg, "cpu", data_dir, None, seed=3, start_step=15)
    graphed = Trainer(cfg, "cpu", data_dir, None, seed=3, start_step=15)
    capture = Rerun()
    graphed.set_cuda_graphs(True, capture=capture)
    for step in range(15, 21):
        plain.train_step(step)
        graphed.train_step(step)
    assert_same(weights(graphed), weights(plain))
    assert_same(optimizer_state(graphed), optimizer_state(plain))

    g = graphed.graphs
    keys = len(g.pairs)
    assert keys == 2                        # one pair before the transition, one after
    assert g.captures == keys and capture.recorded == 2 * keys
    micro_batches = 6 * cfg.micro_batches
    assert g.replays == micro_batches - keys   # only each key's first micro-batch ran eagerly


def test_gradients_stay_the_same_tensors_across_steps(data_dir):  # noqa: F811
    t = Trainer(small_config(), "cpu", data_dir, None, seed=3, start_step=15)
    t.set_cuda_graphs(True, capture=Rerun())
    t.train_step(15)
    grads = {n: p.grad for n, p in t.model.named_parameters() if p.grad is not None}
    t.train_step(16)
    t.train_step(17)
    assert grads and all(p.grad is grads[n] for n, p in t.model.named_parameters() if n in grads)
    # The odd step's optimizer zeroed everything it used.
    assert all(not g.any() for g in grads.values())


def test_replaced_gradients_drop_the_graphs(data_dir):  # noqa: F811
    t = Trainer(small_config(), "cpu", data_dir, None, seed=3, start_step=15)
    t.set_cuda_graphs(True, capture=Rerun())
    t.train_step(15)
    assert t.graphs.captures == 1
    t.model.zero_grad(set_to_none=True)     # graphs would now write to freed tensors
    t.train_step(16)
    assert t.graphs.captures == 2 and len(t.graphs.pairs) == 1


def test_warmup_with_graphs_keeps_them_and_resets_the_gradients(data_dir):  # noqa: F811
    cfg = small_config()
    t = Trainer(cfg, "cpu", data_dir, None, seed=1)
    t.set_cuda_graphs(True, capture=Rerun())
    t.warmup("stage1")
    pairs = dict(t.graphs.pairs)
    assert pairs
    used = [p.grad for p in t.model.parameters() if p.grad is not None]
    assert used and all(not g.any() for g in used)
    fresh = Trainer(cfg, "cpu", data_dir, None, seed=1)
    for s in (0, 1):
        t.train_step(s)
        fresh.train_step(s)
    assert_same(weights(t), weights(fresh))
    assert t.graphs.pairs.keys() == pairs.keys()   # step 0's key was captured in the warm-up


def test_keep_grads_zeroes_in_place_and_keeps_adam_grads_on_even_steps():
    model = torch.nn.Module()
    model.scalars = torch.nn.Parameter(torch.ones(4))
    model.attn_bank = torch.nn.Parameter(torch.randn(1, 4 * 8, 8).bfloat16())
    opt = NorMuonAndAdam(model, small_config(), grad_accum=1, compile=False, keep_grads=True)
    model.scalars.grad = torch.full((4,), 0.5)
    model.attn_bank.grad = torch.randn_like(model.attn_bank)
    sg, bg = model.scalars.grad, model.attn_bank.grad
    opt.step(0, 1.0, 0.9)                   # even: NorMuon only; Adam's gradient is kept
    assert model.attn_bank.grad is bg and not bg.any()
    assert model.scalars.grad is sg and torch.equal(sg, torch.full((4,), 0.5))
    opt.step(1, 1.0, 0.9)                   # odd: Adam too
    assert model.scalars.grad is sg and not sg.any()


def test_graphs_need_cuda(data_dir):  # noqa: F811
    with pytest.raises(SpeedtraceError, match="CUDA graphs need a CUDA device"):
        Trainer(small_config(), "cpu", data_dir, None, cuda_graphs=True)


def test_micro_batch_graphs_copy_each_batch_into_the_static_inputs():
    w = torch.nn.Parameter(torch.zeros(3))
    g = MicroBatchGraphs([w], Rerun())
    for x in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]), torch.tensor([5.0, 5.0, 5.0])):
        g.micro_batch("k", (x,), lambda x: (w * x).sum())
    assert g.replays == 2
    assert torch.equal(w.grad, torch.tensor([16.0, 27.0, 38.0]))
