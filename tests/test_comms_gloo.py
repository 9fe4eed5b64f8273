"""Two gloo processes on localhost: the collectives' values, and NorMuonAndAdam's replicated,
sharded and sparse paths landing where the world-size-1 optimizer does with averaged gradients.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_optimizer import FakeModel, bigram_rows, fake_grads, run, snapshot

import speedtrace.trainer.optimizer as opt_mod
from speedtrace.trainer.comms import Comms
from speedtrace.trainer.config import tiny
from speedtrace.trainer.optimizer import NorMuonAndAdam

WORLD = 2
STEPS = range(6)
SPLIT = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _primitives(rank: int) -> dict:
    comms = Comms(rank, WORLD)
    out = {}
    t = torch.full((3,), float(rank + 1), dtype=torch.bfloat16)
    out["all_reduce"] = comms.all_reduce_avg(t).wait().clone()
    assert out["all_reduce"].data_ptr() == t.data_ptr() or torch.equal(t, out["all_reduce"])
    full = torch.arange(8, dtype=torch.float32).view(4, 2) + 10 * rank
    out["reduce_scatter"] = comms.reduce_scatter_avg(full.bfloat16()).wait().float()
    gathered = torch.empty(4, 2, dtype=torch.bfloat16)
    comms.all_gather(gathered, torch.full((2, 2), float(rank + 1), dtype=torch.bfloat16)).wait()
    out["all_gather"] = gathered.float()
    # Rank 0 sends 1 value to itself and 2 to rank 1; rank 1 sends 3 to rank 0 and none to itself.
    send = torch.arange(3, dtype=torch.float32) + 100 * rank
    in_splits = [1, 2] if rank == 0 else [3, 0]
    out_splits = [1, 3] if rank == 0 else [2, 0]
    recv = torch.empty(sum(out_splits), dtype=torch.bfloat16)
    out["all_to_all"] = comms.all_to_all(recv, send.bfloat16(), out_splits, in_splits).wait().float()
    return out


def _train(rank: int, sparse: bool) -> dict:
    model = FakeModel(seed=0)
    if sparse:
        opt_mod.SPARSE_WORLD_SIZE = WORLD   # the record turns it on only at 8 ranks
    opt = NorMuonAndAdam(model, tiny(), rank=rank, world_size=WORLD, grad_accum=1 if sparse else 4)
    assert opt.slots["bigram_embed"].comms == ("sharded_sparse" if sparse else "sharded")
    run(opt, model, STEPS, lambda s: fake_grads(model, s, rank), split_step=SPLIT,
        sparse_rows=(lambda s: bigram_rows(s, rank)) if sparse else None)
    return dict(params=snapshot(model), embed_step=opt.slots["embed"].state["step"])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result = dict(primitives=_primitives(rank), dense=_train(rank, False), sparse=_train(rank, True))
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_collectives_average_scatter_gather_and_exchange(ranks):
    p0, p1 = ranks[0]["primitives"], ranks[1]["primitives"]
    for p in (p0, p1):
        assert torch.equal(p["all_reduce"], torch.full((3,), 1.5, dtype=torch.bfloat16))
        assert torch.equal(p["all_gather"], torch.tensor([[1.0, 1], [1, 1], [2, 2], [2, 2]]))
    # mean over ranks of (arange + 10·rank) = arange + 5; rank k keeps rows 2k, 2k+1.
    assert torch.equal(p0["reduce_scatter"], torch.tensor([[5.0, 6], [7, 8]]))
    assert torch.equal(p1["reduce_scatter"], torch.tensor([[9.0, 10], [11, 12]]))
    assert torch.equal(p0["all_to_all"], torch.tensor([0.0, 100, 101, 102]))
    assert torch.equal(p1["all_to_all"], torch.tensor([1.0, 2]))


def _world1_reference() -> dict:
    """One process, gradients averaged over what the two ranks computed."""
    model = FakeModel(seed=0)
    opt = NorMuonAndAdam(model, tiny())

    def mean_grads(s):
        per_rank = [fake_grads(model, s, r) for r in range(WORLD)]
        return {k: sum(g[k].float() for g in per_rank).div(WORLD).to(per_rank[0][k].dtype) for k in per_rank[0]}

    run(opt, model, STEPS, mean_grads, split_step=SPLIT)
    return snapshot(model)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_two_ranks_match_one_rank(ranks, path):
    want = _world1_reference()
    for r in range(WORLD):
        got = ranks[r][path]["params"]
        assert ranks[r][path]["embed_step"] == 3   # split after Adam step 2 of 3, then one more
        for label, value in want.items():
            # The gradients are exact in bf16 under any summation order and each slice's math is
            # elementwise or per matrix, so sharding must not change a single bit.
            assert torch.equal(got[label], value), f"rank {r} {path} {label}"
    # Every rank ends with the same full parameters (the gathers completed).
    for label in want:
        assert torch.equal(ranks[0][path]["params"][label], ranks[1][path]["params"][label]), label
