"""The main job: train a network on the task labels and track usable information while it learns.

``run_experiment(config, out_dir)`` trains a CIFAR-style ResNet-18 on the 20 coarse labels of
CIFAR-100 (or of the built-in synthetic stand-in) with SGD, and measures usable information
about the coarse and the fine labels at several layers on a schedule, through
:class:`~uinfo_fast.tracker.UsableInfoTracker`. The run directory gets:

* ``config.json``  the full configuration (written first; ``--resume`` reads it back),
* ``log.jsonl``    one row per (measurement step, layer, label set),
* ``checkpoint.pt`` model, optimiser and step at the last measurement (for ``--resume``),
* ``summary.json`` final accuracies, wall time and the share of it spent measuring,
* ``usable_information.png`` usable information against training step, one panel per layer.

Determinism and resuming: every epoch's shuffling is drawn from a generator seeded by
(seed, epoch) and every batch's augmentation from one seeded by (seed, epoch, batch), so a run
resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen. A
checkpoint is written right after each measurement's rows reach the log; on resume the log is cut
back to the checkpoint's step, so a kill at any point leaves no duplicated and no missing rows.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .capture import POOLS
from .tracker import JsonlLog, Schedule, UsableInfoTracker, read_log

LR_SCHEDULES = ("constant", "cosine", "step")


@dataclass
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory."""

    task: str = "images"              # "images" (ResNet on coarse labels) or "checkerboard"
    dataset: str = "synthetic"        # images: "synthetic" (built in) or "cifar100"
    data_dir: str | None = None       # cifar100: where cifar-100-python/ is or goes
    download: bool = False
    n_train: int = 10_000             # synthetic / checkerboard size (cifar100: the full set)
    n_test: int = 2_000
    width: int = 8                    # ResNet-18 base width (64 is the standard network)
    epochs: float = 5.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "constant"     # constant | cosine | step (x0.1 at 50% and 75%)
    augment: bool = True
    coherences: list[float] | None = None  # checkerboard: colour coherence levels (default LEARNABLE_COHERENCES)
    # Perturbed early training: lr / batch size for the first `early_steps` steps.
    early_steps: int = 0
    early_lr: float | None = None
    early_batch_size: int | None = None
    # Tracking
    track: bool = True
    layers: list[str] | None = None   # default: the task's stages
    label_sets: list[str] | None = None
    probe_train: int = 1_200          # fixed probe-training inputs, from the training set
    probe_val: int = 300              # fixed inputs to choose the penalty on, from the test split
    probe_test: int = 500             # fixed probe-test inputs, from the test split, disjoint from val
    track_every: int = 50
    early_until: int = 50             # plus log-spaced measurements in [1, early_until]
    early_points: int = 6
    l2_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    n_bootstrap: int = 200
    pool: str = "avg"                 # how conv maps become probe features: avg, max or flatten
    probe_tol: float = 1e-4           # max |gradient|; bench/probe_tolerance.py: within 0.01 bits of tol 1e-5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.task not in ("images", "checkerboard"):
            raise ValueError(f"task must be 'images' or 'checkerboard', got {self.task!r}")
        if self.dataset not in ("synthetic", "cifar100"):
            raise ValueError(f"dataset must be 'synthetic' or 'cifar100', got {self.dataset!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not isinstance(self.probe_val, int) or self.probe_val < 0:
            raise ValueError(f"probe_val must be an integer >= 0 (0: carve the validation rows from probe_train), "
                             f"got {self.probe_val!r}")
        for name in ("n_train", "n_test", "width", "batch_size", "probe_train", "probe_test", "track_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.early_steps < 0:
            raise ValueError(f"early_steps must be >= 0, got {self.early_steps}")
        if self.early_lr is not None and not self.early_lr > 0:
            raise ValueError(f"early_lr must be > 0, got {self.early_lr}")
        if self.early_batch_size is not None and self.early_batch_size < 1:
            raise ValueError(f"early_batch_size must be >= 1, got {self.early_batch_size}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_task(cls, task: str = "images", **overrides) -> RunConfig:
        """The task's defaults (``TASK_DEFAULTS``) with ``overrides`` on top."""
        if task not in TASK_DEFAULTS:
            raise ValueError(f"task must be one of {sorted(TASK_DEFAULTS)}, got {task!r}")
        return cls(**{"task": task, **TASK_DEFAULTS[task], **overrides})

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        return cls(**d)


# The checkerboard defaults follow the paper's quoted configuration: 10,000 trials (90% train),
# batch 32, learning rate 0.05, a small fully connected network.
TASK_DEFAULTS = {
    "images": {},
    "checkerboard": dict(n_train=9_000, n_test=2_000, batch_size=32, lr=0.05, momentum=0.0, weight_decay=0.0,
                         epochs=20.0, probe_train=2_000, probe_val=500, probe_test=1_000, track_every=250, early_until=250,
                         early_points=8, augment=False),
}


# ---------------------------------------------------------------------------------------------
# Tasks: data, model and which layers / labels to probe


@dataclass
class TaskData:
    train_x: torch.Tensor          # inputs the network trains on (uint8 images or float vectors)
    train_y: torch.Tensor          # [N] int64 task labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    probe_train_x: torch.Tensor    # fixed probe inputs, already preprocessed (float)
    probe_train_labels: dict
    probe_test_x: torch.Tensor
    probe_test_labels: dict
    probe_val_x: torch.Tensor | None
    probe_val_labels: dict | None
    model: nn.Module
    layers: list[str]
    task_label: str
    preprocess: object             # (batch, generator | None) -> float inputs on the device


def _probe_indices(cfg: RunConfig, n_train: int, n_test: int):
    """Fixed probe subsets, chosen once from the seed: train rows, and disjoint test and
    validation rows of the test split (validation None when probe_val is 0)."""
    gen = torch.Generator().manual_seed(cfg.seed + 101)
    if cfg.probe_test + cfg.probe_val > n_test:
        raise ValueError(f"probe_test + probe_val = {cfg.probe_test + cfg.probe_val} exceeds the {n_test} test examples")
    train = torch.randperm(n_train, generator=gen)[:min(cfg.probe_train, n_train)]
    perm = torch.randperm(n_test, generator=gen)
    val = perm[cfg.probe_test:cfg.probe_test + cfg.probe_val] if cfg.probe_val > 0 else None
    return train, perm[:cfg.probe_test], val


def build_task(cfg: RunConfig) -> TaskData:
    device = torch.device(cfg.device)
    if cfg.task == "images":
        from .datasets import augment_batch, load_cifar100, normalize, synthetic_cifar
        from .models import cifar_resnet18

        if cfg.dataset == "cifar100":
            if cfg.data_dir is None:
                raise ValueError("dataset 'cifar100' needs data_dir (the directory that holds cifar-100-python/)")
            train, test = load_cifar100(cfg.data_dir, download=cfg.download)
        else:
            train, test = synthetic_cifar(cfg.n_train, cfg.n_test, seed=cfg.seed)

        def preprocess(images, generator):
            images = images.to(device, non_blocking=True)
            if generator is not None and cfg.augment:
                images = augment_batch(images, generator)
            return normalize(images)

        ptr, pte, pval = _probe_indices(cfg, len(train), len(test))
        torch.manual_seed(cfg.seed)
        model = cifar_resnet18(num_classes=20, width=cfg.width).to(device)
        label_sets = cfg.label_sets or ["coarse", "fine"]
        labels = lambda split, idx: {k: getattr(split, k)[idx] for k in label_sets}  # noqa: E731
        for k in label_sets:
            if k not in ("coarse", "fine"):
                raise ValueError(f"label_sets: the image task has 'coarse' and 'fine', got {k!r}")
        return TaskData(train.images, train.coarse, test.images, test.coarse,
                        probe_train_x=normalize(train.images[ptr]), probe_train_labels=labels(train, ptr),
                        probe_test_x=normalize(test.images[pte]), probe_test_labels=labels(test, pte),
                        probe_val_x=None if pval is None else normalize(test.images[pval]),
                        probe_val_labels=None if pval is None else labels(test, pval), model=model,
                        layers=cfg.layers or ["layer1", "layer2", "layer3", "layer4"], task_label="coarse",
                        preprocess=preprocess)
    from .checkerboard import LEARNABLE_COHERENCES, CheckerboardNet, make_checkerboard_trials

    levels = tuple(cfg.coherences or LEARNABLE_COHERENCES)
    train = make_checkerboard_trials(cfg.n_train, seed=cfg.seed, coherences=levels)
    test = make_checkerboard_trials(cfg.n_test, seed=cfg.seed + 1_000_003, coherences=levels)
    ptr, pte, pval = _probe_indices(cfg, len(train), len(test))
    torch.manual_seed(cfg.seed)
    model = CheckerboardNet(train.inputs.shape[1]).to(device)
    label_sets = cfg.label_sets or ["direction", "colour", "targets"]
    for k in label_sets:
        if k not in ("direction", "colour", "targets"):
            raise ValueError(f"label_sets: the checkerboard task has 'direction', 'colour' and 'targets', got {k!r}")
    layers = cfg.layers or [n for n, _ in model.named_children() if n.startswith("hidden")]
    tl, te = train.labels(), test.labels()
    return TaskData(train.inputs, train.direction, test.inputs, test.direction,
                    probe_train_x=train.inputs[ptr], probe_train_labels={k: tl[k][ptr] for k in label_sets},
                    probe_test_x=test.inputs[pte], probe_test_labels={k: te[k][pte] for k in label_sets},
                    probe_val_x=None if pval is None else test.inputs[pval],
                    probe_val_labels=None if pval is None else {k: te[k][pval] for k in label_sets},
                    model=model, layers=layers, task_label="direction",
                    preprocess=lambda x, _gen: x.to(device, non_blocking=True))


# ---------------------------------------------------------------------------------------------
# The training plan: which examples each step sees, and with which learning rate


class Plan:
    """Step-indexed batches and learning rates, a pure function of the config (for resuming).

    Steps [0, early_steps) use the early batch size and learning rate when set; epochs are
    counted in examples seen, so a perturbed run covers the same data as the plain one.
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
        frac = step / max(1, self.total_steps)
        if cfg.lr_schedule == "cosine":
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
        if cfg.lr_schedule == "step":
            return cfg.lr * (0.1 if frac >= 0.5 else 1.0) * (0.1 if frac >= 0.75 else 1.0)
        return cfg.lr


# ---------------------------------------------------------------------------------------------
# The run


def train_step(task: TaskData, plan: Plan, opt: torch.optim.Optimizer, step: int):
    """One SGD step of the plan: the batch, learning rate and augmentation of ``step``.
    Returns (logits, labels, loss)."""
    idx = plan.indices(step)
    x = task.preprocess(task.train_x[idx], plan.augment_generator(step))
    y = task.train_y[idx].to(x.device)
    for g in opt.param_groups:
        g["lr"] = plan.lr(step)
    out = task.model(x)
    loss = nn.functional.cross_entropy(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out, y, loss


def _save_atomic(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, prep, batch: int = 1024) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        out = model(prep(x[i:i + batch], None))
        correct += int((out.argmax(1).cpu() == y[i:i + batch]).sum())
    model.train(was)
    return correct / x.shape[0]


def run_experiment(cfg: RunConfig, out_dir: str, *, resume: bool = False, progress: bool = True) -> dict:
    """Trains and tracks as configured; returns the summary (also written to summary.json)."""
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = os.path.join(out_dir, "config.json")
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    log_path = os.path.join(out_dir, "log.jsonl")
    if resume:
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"--resume: {out_dir} has no config.json; is it a run directory?")
        saved = RunConfig.from_json(json.load(open(cfg_path)))
        if saved != cfg:
            diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_json().items() if getattr(cfg, k) != v}
            raise ValueError(f"--resume: the config differs from the run's own (saved, given): {diff}")
    else:
        if os.path.exists(log_path) or os.path.exists(ckpt_path):
            raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or pick another --out")
        with open(cfg_path, "w") as fh:
            json.dump(cfg.to_json(), fh, indent=1)

    torch.manual_seed(cfg.seed)
    task = build_task(cfg)
    model, device = task.model, torch.device(cfg.device)
    plan = Plan(cfg, task.train_x.shape[0])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start, elapsed, measure_seconds = 0, 0.0, 0.0
    if resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed, measure_seconds = state["step"], state["elapsed"], state["measure_seconds"]
    tracker = None
    if cfg.track:
        if resume:
            # Rows after the checkpoint belong to steps that will run again.
            JsonlLog(log_path).truncate_after(start if os.path.exists(ckpt_path) else -1)
        tracker = UsableInfoTracker(
            model, task.layers, task.probe_train_x, task.probe_train_labels, task.probe_test_x,
            task.probe_test_labels, log_path=log_path,
            schedule=Schedule(every=cfg.track_every, early_until=cfg.early_until, early_points=cfg.early_points),
            l2_grid=cfg.l2_grid, n_bootstrap=cfg.n_bootstrap, tol=cfg.probe_tol, seed=cfg.seed, pool=cfg.pool,
            val_inputs=task.probe_val_x, val_labels=task.probe_val_labels)
        tracker.measure_seconds = measure_seconds

    def checkpoint(step):
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                      "elapsed": elapsed + time.perf_counter() - t0,
                      "measure_seconds": tracker.measure_seconds if tracker else 0.0}, ckpt_path)

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, plan.total_steps + 1), initial=start, total=plan.total_steps + 1,
               desc=f"{cfg.task}", unit="step", disable=not progress, dynamic_ncols=True)
    loss_ema, acc_ema = None, None
    for step in bar:
        resumed_here = resume and step == start and os.path.exists(ckpt_path)
        due = tracker is not None and (tracker.schedule.due(step) or step == plan.total_steps)
        if due and not resumed_here:
            tracker.measure(step, epoch=plan.epoch(step))
            checkpoint(step)
            post = {}
            for lab in task.probe_train_labels:
                r = tracker.latest(task.layers[-1], lab)
                post[lab] = f"{r['bits']:.2f}b"
            if loss_ema is not None:
                post = {"loss": f"{loss_ema:.3f}", "acc": f"{acc_ema:.2f}", **post}
            bar.set_postfix(post, refresh=False)
        if step == plan.total_steps:
            break
        out, y, loss = train_step(task, plan, opt, step)
        if step % 10 == 0:
            lv, av = float(loss.detach()), float((out.detach().argmax(1) == y).float().mean())
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            acc_ema = av if acc_ema is None else 0.9 * acc_ema + 0.1 * av
            if not math.isfinite(lv):
                raise FloatingPointError(f"training diverged at step {step} (loss {lv}); lower --lr")
    bar.close()
    wall = elapsed + time.perf_counter() - t0
    summary = {
        "steps": plan.total_steps,
        "epochs": cfg.epochs,
        "wall_seconds": wall,
        "measure_seconds": tracker.measure_seconds if tracker else 0.0,
        "measure_share": (tracker.measure_seconds / wall) if tracker and wall > 0 else 0.0,
        "train_accuracy": _accuracy(model, task.train_x[:5000], task.train_y[:5000], task.preprocess),
        "test_accuracy": _accuracy(model, task.test_x, task.test_y, task.preprocess),
        "task_label": task.task_label,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    if tracker is not None:
        from .plots import plot_runs

        plot_runs([out_dir], os.path.join(out_dir, "usable_information.png"))
    return summary


def load_run(run_dir: str) -> tuple[RunConfig, list[dict]]:
    """(config, log rows) of a run directory."""
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{run_dir} has no config.json; is it a uinfo-fast run directory?")
    return RunConfig.from_json(json.load(open(cfg_path))), read_log(os.path.join(run_dir, "log.jsonl"))
