"""Process-group set-up for the trainer: one process, or one per GPU (or CPU rank) under torchrun.

Every rank does 8 / world_size micro-batches per step, so the global batch and the per-micro-
batch shapes are the same at any world size (docs/trainer.md, "Distributed runs"). On CUDA the group is
"cuda:nccl,cpu:gloo" (the sparse bigram path exchanges CPU tensors over gloo); on CPU, gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from speedtrace.errors import SpeedtraceError


@dataclass(frozen=True)
class Place:
    """Where this process sits: its rank, the world size, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: object = None     # the default process group, or None for a single plain process

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) set by torchrun, or None when started directly."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except (KeyError, ValueError):
        raise SpeedtraceError("RANK / WORLD_SIZE / LOCAL_RANK: set but not integers (start with torchrun)") from None


def check_world_size(world_size: int, micro_batches: int = 8) -> int:
    """Gradient-accumulation steps for ``world_size``: micro_batches / world_size."""
    if world_size < 1 or micro_batches % world_size:
        raise SpeedtraceError(f"world size {world_size} must divide the {micro_batches} micro-batches (1, 2, 4 or 8)")
    return micro_batches // world_size


def setup(device_kind: str, micro_batches: int = 8) -> Place:
    """Start the process group when launched by torchrun; pick this rank's device.

    A direct launch is a world of one without a process group. On CUDA a dummy backward runs
    first, as in the record (a work-around it gives for start-up failures on some systems).
    """
    env = world_from_env()
    rank, world_size, local_rank = env if env is not None else (0, 1, 0)
    check_world_size(world_size, micro_batches)
    if device_kind == "cuda":
        if not torch.cuda.is_available():
            raise SpeedtraceError("--device cuda: no CUDA device is available")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.empty(1, device=device, requires_grad=True).backward()
    else:
        device = torch.device("cpu")
    group = None
    if env is not None:
        if device.type == "cuda":
            dist.init_process_group(backend="cuda:nccl,cpu:gloo", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        dist.barrier()
        group = dist.group.WORLD
    return Place(rank, world_size, local_rank, device, group)


def teardown(place: Place) -> None:
    if place.group is not None and dist.is_initialized():
        dist.destroy_process_group()
