"""The training plan: which examples each step sees, with which learning rate, and one step of it."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..tasks.registry import TaskData
from .config import RunConfig


# Shares of training after which the "step" learning-rate schedule multiplies the rate by 0.1.
STEP_DROPS = (0.5, 0.75)


class Plan:
    """Step-indexed batches and learning rates, a pure function of the config (for resuming).

    Steps [0, early_steps) use the early batch size and learning rate when set; epochs are
    counted in examples seen, so a perturbed run covers the same data as the plain one. A
    warm-up (``warmup_epochs``) ramps the learning rate up linearly from about 0 over its first
    epochs (Goyal et al., 2017): SGD at a high rate and a small batch can otherwise sit at chance
    from initialisation while weight decay shrinks the network until its units are dead.
    """

    def __init__(self, cfg: RunConfig, n_train: int):
        self.cfg, self.n = cfg, n_train
        early_bs = cfg.early_batch_size or cfg.batch_size
        n_early = cfg.early_steps
        early_examples = n_early * early_bs
        total_examples = int(round(cfg.epochs * n_train))
        if early_examples >= total_examples:
            raise ValueError(f"early_steps={n_early} at batch {early_bs} covers the whole run of {cfg.epochs} epochs")
        self.total_steps = n_early + math.ceil((total_examples - early_examples) / cfg.batch_size)
        self.early_bs, self.n_early = early_bs, n_early

    def batch_size(self, step: int) -> int:
        return self.early_bs if step < self.n_early else self.cfg.batch_size

    def offset(self, step: int) -> int:
        """Examples seen before ``step``."""
        if step <= self.n_early:
            return step * self.early_bs
        return self.n_early * self.early_bs + (step - self.n_early) * self.cfg.batch_size

    def epoch(self, step: int) -> float:
        return self.offset(step) / self.n

    def indices(self, step: int) -> torch.Tensor:
        """Example indices of the batch at ``step``: a fresh permutation per epoch, seeded by (seed, epoch)."""
        start, size = self.offset(step), self.batch_size(step)
        out = []
        while size > 0:
            epoch, pos = divmod(start, self.n)
            perm = self._perm(epoch)
            take = min(size, self.n - pos)
            out.append(perm[pos:pos + take])
            start, size = start + take, size - take
        return torch.cat(out)

    def _perm(self, epoch: int) -> torch.Tensor:
        if getattr(self, "_cached", (None,))[0] != epoch:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.n, generator=gen))
        return self._cached[1]

    def augment_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 7_919 + 104_729 * step + 1)

    def lr(self, step: int) -> float:
        cfg = self.cfg
        if step < self.n_early and cfg.early_lr is not None:
            return cfg.early_lr
        return self._schedule(step) * self._warmup(step)

    def _schedule(self, step: int) -> float:
        cfg, frac = self.cfg, step / max(1, self.total_steps)
        if cfg.lr_schedule == "cosine":
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
        if cfg.lr_schedule == "step":
            return cfg.lr * 0.1 ** sum(frac >= f for f in STEP_DROPS)
        return cfg.lr

    def lr_drops(self) -> list[int]:
        """The steps from which the "step" schedule's learning rate is a tenth of what it was."""
        if self.cfg.lr_schedule != "step":
            return []
        return [math.ceil(f * self.total_steps) for f in STEP_DROPS]

    def _warmup(self, step: int) -> float:
        """The linear warm-up's factor: (examples seen, plus this batch) / the warm-up's examples,
        up to 1. Counted in examples, so that every batch size warms up over the same data."""
        if self.cfg.warmup_epochs <= 0:
            return 1.0
        return min(1.0, (self.offset(step) + self.batch_size(step)) / (self.cfg.warmup_epochs * self.n))


def train_step(task: TaskData, plan: Plan, opt: torch.optim.Optimizer, step: int, model: nn.Module | None = None,
               share=None):
    """One SGD step of the plan: the batch, learning rate and augmentation of ``step``, through
    ``model`` (default ``task.model``; a DistributedDataParallel wrapper under torchrun).
    ``share`` maps the batch's positions to this rank's (None: all of them). Returns (logits,
    labels, loss)."""
    idx = plan.indices(step)
    # The whole batch is augmented, then shared out: each example gets the crop it gets in one process.
    x = task.preprocess(task.train_x[idx], plan.augment_generator(step))
    y = task.train_y[idx]
    if share is not None:
        keep = share(torch.arange(idx.shape[0]))
        x, y = x[keep.to(x.device)], y[keep]
    y = y.to(x.device)
    for g in opt.param_groups:
        g["lr"] = plan.lr(step)
    out = (model or task.model)(x)
    loss = nn.functional.cross_entropy(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out, y, loss
