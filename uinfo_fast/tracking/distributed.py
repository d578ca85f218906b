"""The tracker under ``torch.distributed`` (DDP, ``torchrun``): shards of the probe inputs, features
gathered to rank 0, and the decisions every rank must share.

Each rank captures one contiguous shard of every probe split, padded to the same length so that
every rank runs the same forward passes and the gather has equal shapes; rank 0 reassembles the
features exactly as a single process would have captured them (the padding dropped) and fits,
scores and logs. A rank that decided alone whether to capture could leave the others waiting in
the gather forever, so what may differ between ranks (the batch-norm statistics DDP ranks update
each on its own batch: every rank captures with rank 0's), (the last step of a log only rank 0 reads,
a budget measured on each rank's clock, a full asynchronous worker on rank 0) is rank 0's
decision, broadcast.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper: its forward runs no collective of DDP's
    own (buffer broadcasts), so ranks capture independently until the gather."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


_ALONE: list[bool] = []  # non-empty inside alone()


@contextlib.contextmanager
def alone():
    """Inside the block, :meth:`Ranks.current` is rank 0 of 1 whatever the process group: a
    tracker made there is run by this process by itself (the other ranks make none), so it shards
    nothing and waits on no other rank."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


@dataclass(frozen=True)
class Ranks:
    """This process's place in the default process group (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized() and not _ALONE:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """[lo, hi) of the rows of ``n`` that ``rank`` (default: this one) captures."""
        per = math.ceil(n / self.world)
        lo = min(n, (self.rank if rank is None else rank) * per)
        return lo, min(n, lo + per)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``x``, padded (with copies of a row) to ``ceil(N / world)`` rows."""
        per = math.ceil(x.shape[0] / self.world)
        lo, hi = self.bounds(x.shape[0])
        part = x[lo:hi]
        if part.shape[0] < per:
            filler = (part[:1] if part.shape[0] else x[:1]).expand(per - part.shape[0], *x.shape[1:])
            part = torch.cat([part, filler])
        return part

    def _device(self, like: torch.Tensor) -> torch.device:
        # NCCL moves CUDA tensors only; gloo moves CPU ones.
        return like.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def gather_rows(self, features: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor] | None:
        """Every rank's shard of ``features`` ({layer: [ceil(n / world), D]}), joined on rank 0 into
        {layer: [n, D]} in row order, on this rank's device; None on the other ranks. One gather."""
        names = list(features)
        widths = [features[k].shape[1] for k in names]
        first = features[names[0]]
        packed = torch.cat([features[k].float() for k in names], dim=1).to(self._device(first))
        parts = [torch.empty_like(packed) for _ in range(self.world)] if self.main else None
        dist.gather(packed.contiguous(), parts, dst=0)
        if not self.main:
            return None
        rows = torch.cat([p[:hi - lo] for r, p in enumerate(parts) for lo, hi in [self.bounds(n, r)]]).to(first.device)
        return dict(zip(names, rows.split(widths, dim=1)))

    @contextlib.contextmanager
    def buffers_of_rank0(self, model: torch.nn.Module):
        """Rank 0's buffers in ``model`` for the block (one broadcast per dtype), each rank's own
        put back after it: the features of every shard come from the same network."""
        buffers = list(model.buffers())
        if not self.sharded or not buffers:
            yield
            return
        own = [b.detach().clone() for b in buffers]
        for dtype in sorted({b.dtype for b in buffers}, key=str):  # the same order on every rank
            group = [b for b in buffers if b.dtype == dtype]
            flat = torch.cat([b.detach().reshape(-1) for b in group]).to(self._device(group[0]))
            dist.broadcast(flat, src=0)
            for b, part in zip(group, flat.split([b.numel() for b in group])):
                b.data.copy_(part.view_as(b))
        try:
            yield
        finally:
            for b, mine in zip(buffers, own):
                b.data.copy_(mine)

    def agree(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (a broadcast; one host synchronisation)."""
        if not self.sharded:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        t = t.cuda() if dist.get_backend() == "nccl" else t
        dist.broadcast(t, src=0)
        return int(t.item())
