"""Runs under ``torchrun``: the process group torchrun describes, the model in
DistributedDataParallel, and what only rank 0 does.

Each rank trains on its share of every global batch (rows ``rank::world`` of the plan's batch,
what a DistributedSampler gives a DataLoader), so the step count, the learning-rate schedule and
the resume points are those of a single-process run. Every rank keeps the same probe inputs and
measures together (``uinfo_fast.tracking.distributed``); rank 0 alone writes the run directory.
"""
from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from ..tracking.distributed import Ranks


def join_from_env(device: str) -> bool:
    """Joins the process group that torchrun's environment describes (``WORLD_SIZE`` > 1):
    NCCL on CUDA (one GPU per local rank), gloo on the CPU. Returns whether it made the group
    (False with no torchrun, or when the caller made one already)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def leave_process_group() -> None:
    """Destroys the process group, after freeing what still holds it.

    A DistributedDataParallel wrapper sits in reference cycles, so it outlives its last name
    until the cycle collector runs; its reducer holds the process group. Freed only at
    interpreter exit, it tears gloo's threads down while the interpreter does, which aborts the
    process ("terminate called without an active exception"). Collecting first frees it while
    everything is still alive."""
    gc.collect()
    dist.destroy_process_group()


def wrap(model: nn.Module, ranks: Ranks) -> nn.Module:
    """The model training steps run through: in DistributedDataParallel when there are ranks."""
    if not ranks.sharded:
        return model
    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def my_share(idx: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's rows of a global batch."""
    return idx[ranks.rank::ranks.world] if ranks.sharded else idx


def barrier(ranks: Ranks) -> None:
    if ranks.sharded:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of ``values`` over the ranks (itself without them)."""
    if not ranks.sharded:
        return values
    total = values.detach().clone()
    dist.all_reduce(total)
    return total / ranks.world
