"""The main job: train a network on the task labels and track usable information while it learns.

``run_experiment(config, out_dir)`` builds the config's task (``uinfo_fast.tasks``), trains its
network with SGD on the task label, and measures usable information about every probed label
set at several layers on a schedule, through :class:`~uinfo_fast.tracking.UsableInfoTracker`.
The run directory gets:

* ``config.json``  the full configuration (written first; ``--resume`` reads it back),
* ``log.jsonl``    one row per (measurement step, layer, label set),
* ``checkpoint.pt`` model, optimiser and step at the last measurement (for ``--resume``),
* ``summary.json`` final accuracies, wall time and the share of it spent measuring,
* ``usable_information.png`` usable information against training step, one panel per layer,

and, when asked (``tensorboard=DIR``), TensorBoard scalars of the same rows in DIR.

Determinism and resuming: every epoch's shuffling is drawn from a generator seeded by
(seed, epoch) and every batch's augmentation from one seeded by (seed, step), so a run
resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen. A
checkpoint is written right after each measurement's rows reach the log; on resume the log is cut
back to the checkpoint's step, so a kill at any point leaves no duplicated and no missing rows.
"""
from __future__ import annotations

import json
import math
import os
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from ..integrations.tensorboard_sink import TensorBoardSink
from ..tasks.registry import TaskData, build_task, get_task
from ..tracking.log import WriterLock, atomic_write, atomic_write_json, lock_path, read_log
from ..tracking.runlog import empty_state
from ..tracking.distributed import Ranks
from ..tracking.tracker import UsableInfoTracker
from .config import RunConfig
from .distributed import barrier, join_from_env, leave_process_group, mean_over_ranks, my_share, wrap
from .plan import Plan, train_step

# The most of a run's time that writing checkpoints may take: after a measurement, the next is
# written once the time since the last is at least its cost over this share. A kill loses the
# training since the last one (a hundred times a checkpoint's cost at most), while every point
# of share is a point of the tracked run's overhead: a run measured every 10 steps wrote one
# after nearly every measurement at 5%.
CHECKPOINT_SHARE = 0.01


class RunDir:
    """The files of a run directory."""

    def __init__(self, out_dir: str):
        self.root, self.lock = out_dir, None
        self.config = os.path.join(out_dir, "config.json")
        self.checkpoint = os.path.join(out_dir, "checkpoint.pt")
        self.log = os.path.join(out_dir, "log.jsonl")
        self.summary = os.path.join(out_dir, "summary.json")
        self.figure = os.path.join(out_dir, "usable_information.png")

    def prepare(self, cfg: RunConfig, resume: bool, write: bool = True) -> None:
        """A fresh run writes its config (when ``write``: rank 0 only); a resumed one must find
        the same config there. The writer first takes the directory's lock (the log's), held
        until :meth:`release`: a second process writing the same directory is refused."""
        if write:
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise NotADirectoryError(f"--out {self.root} is a file; --out must name a run directory")
            self.lock = WriterLock(lock_path(self.log), f"run directory {self.root}")
        if resume:
            if not os.path.exists(self.config):
                raise FileNotFoundError(f"--resume: {self.root} has no config.json; is it a run directory?")
            saved = RunConfig.from_json(json.load(open(self.config)))
            if not saved.same_run(cfg):
                diff = saved.resolved().differences(cfg.resolved())
                raise ValueError(f"--resume: the config differs from the run's own (saved, given): {diff}")
        else:
            if self.holds_a_run():
                raise FileExistsError(f"{self.root} already holds a run; pass --resume to continue it or pick "
                                      "another --out")
            if write:
                atomic_write_json(self.config, cfg.resolved().to_json())

    def holds_a_run(self) -> bool:
        """Whether the directory holds a run: a measured row or a checkpoint. A run that failed
        before either (a misspelt layer, say) left nothing to keep, and a new run may start there."""
        return os.path.exists(self.checkpoint) or bool(read_log(self.log))

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def save_checkpoint(state: dict, path: str) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str, cfg: RunConfig) -> dict:
    """The checkpoint at ``path``, refused in one line when it cannot be read or belongs to a run
    of another config."""
    try:
        state = torch.load(path, map_location=torch.device(cfg.device), weights_only=False)
    except Exception as e:  # a truncated or foreign file fails inside torch's reader in many ways
        raise ValueError(f"--resume: {path} cannot be read ({type(e).__name__}: it is damaged or truncated); "
                         "delete it to run again from step 0") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"--resume: {path} is not a uinfo-fast checkpoint")
    # Checkpoints of 0.1 carry no config; older ones lack later fields, which take their defaults.
    saved = cfg if "config" not in state else RunConfig.from_json(state["config"])
    if not saved.same_run(cfg):
        diff = sorted(cfg.resolved().differences(saved.resolved()))
        raise ValueError(f"--resume: {path} belongs to another run (its config differs in {diff}); "
                         "put the run's own checkpoint back or delete it to run again from step 0")
    return state


def make_tracker(cfg: RunConfig, task: TaskData, log_path: str, sinks=()) -> UsableInfoTracker:
    probed = task.probe_train_labels
    beyond = {k: v for k, v in get_task(cfg.task).beyond.items() if k in probed and v in probed}
    return UsableInfoTracker(
        task.model, task.layers, task.probe_train_x, task.probe_train_labels, task.probe_test_x,
        task.probe_test_labels, log_path=log_path, schedule=cfg.schedule, estimator=cfg.estimator,
        capture=cfg.capture, val_inputs=task.probe_val_x, val_labels=task.probe_val_labels, asynchronous=cfg.async_tracking, sinks=sinks,
        beyond=beyond)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, prep, batch: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) of ``model`` in eval mode on unaugmented inputs: the
    training loss it reports tells whether a run reached the near-zero-loss terminal phase."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            out = model(prep(x[i:i + batch], None)).float().cpu()
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
            loss += float(nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
    model.train(was)
    return correct / x.shape[0], loss / x.shape[0]


class _Run:
    """One training run: its task, optimiser, plan and tracker, resumable from its checkpoint."""

    def __init__(self, cfg: RunConfig, files: RunDir, resume: bool, sinks=()):
        self.cfg, self.files, self.ranks = cfg, files, Ranks.current()
        torch.manual_seed(cfg.seed)
        self.task = build_task(cfg)
        self.plan = Plan(cfg, self.task.train_x.shape[0])
        if self.ranks.world > min(cfg.batch_size, cfg.early_batch_size or cfg.batch_size):
            raise ValueError(f"batch_size must be at least the {self.ranks.world} processes, to give each a share")
        self.opt = torch.optim.SGD(self.task.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.net = wrap(self.task.model, self.ranks)
        self.resumed = resume and os.path.exists(files.checkpoint)
        state = self._restore() if self.resumed else None
        self.start, self.elapsed = (state["step"], state["elapsed"]) if state else (0, 0.0)
        self.segments = state.get("segments", 1) + 1 if state else 1  # processes the run has taken
        # Seconds spent writing checkpoints; a checkpoint holds those before it, not its own write.
        self.checkpoint_seconds = state.get("checkpoint_seconds", 0.0) if state else 0.0
        self.config_json = cfg.resolved().to_json()  # what every checkpoint records, made once
        self.tracker = make_tracker(cfg, self.task, files.log, sinks) if cfg.track else None
        if self.tracker is not None:
            # Rows after the checkpoint belong to steps that will run again; without one, none is kept.
            self._resume_tracker(state if state is not None else empty_state())
        # An asynchronous measurement still on its way at the checkpoint is measured again.
        self.measured_at_start = self.resumed and self.start not in state.get("unwritten_steps", [])
        self.t0 = time.perf_counter()
        self.last_checkpoint = (-math.inf, 0.0)  # (when, seconds it took)

    def _resume_tracker(self, state: dict) -> None:
        try:
            self.tracker.load_state_dict(state)
        except ValueError as e:
            raise ValueError(f"--resume: {e} ({self.files.checkpoint})") from None

    def _restore(self) -> dict:
        state = load_checkpoint(self.files.checkpoint, self.cfg)
        self.task.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        return state

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0

    def measured(self) -> float:
        return self.tracker.measure_seconds if self.tracker else 0.0

    def checkpoint(self, step: int) -> None:
        """Everything a resume needs, and what it belongs to: the config and the log rows
        written so far (their count and digest), every earlier measurement written first. Rank 0
        writes it."""
        if not self.ranks.main:
            return
        t0 = time.perf_counter()
        tracked = self.tracker.state_dict(wait_before=step) if self.tracker else {}
        t1 = time.perf_counter()
        save_checkpoint({"model": self.task.model.state_dict(), "optimizer": self.opt.state_dict(), "step": step,
                         "elapsed": self.wall(), "config": self.config_json, "segments": self.segments,
                         "checkpoint_seconds": self.checkpoint_seconds, **tracked}, self.files.checkpoint)
        done = time.perf_counter()
        self.checkpoint_seconds += done - t1  # the write alone, not the wait for measurements
        self.last_checkpoint = (done, done - t0)

    def checkpoint_due(self) -> bool:
        """Whether enough has run since the last checkpoint for the next to cost at most
        :data:`CHECKPOINT_SHARE` of the time between them (a run measured at every step would
        otherwise spend a good part of its time writing them; a kill loses at most that time,
        run again on resume)."""
        at, took = self.last_checkpoint
        return time.perf_counter() - at >= took / CHECKPOINT_SHARE

    def measure_if_due(self, step: int) -> bool:
        """Measures (and checkpoints) when the schedule or the run's end says so."""
        if self.tracker is None or (step == self.start and self.measured_at_start):
            return False  # a resumed run's first step was measured before the kill
        self.tracker.deliver()  # rows the worker has written since, to the sinks
        if not (self.tracker.due(step) or step == self.plan.total_steps):
            return False
        self.tracker.measure(step, epoch=self.plan.epoch(step))
        if step == self.plan.total_steps or self.checkpoint_due():
            self.checkpoint(step)
        return True

    def loop(self, progress: bool) -> None:
        """Trains from the start (or checkpoint) step to the end of the plan."""
        total = self.plan.total_steps
        # The bar counts training steps done; the measurement after the last one ends it.
        bar = tqdm(total=total, initial=self.start, desc=self.cfg.task, unit="step",
                   disable=not (progress and self.ranks.main), dynamic_ncols=True)
        stats = _TrainStats()
        try:
            for step in range(self.start, total + 1):
                if self.measure_if_due(step):
                    bar.set_postfix(stats.postfix(self.tracker, self.task.layers[-1]), refresh=False)
                if step == total:
                    break
                out, y, loss = train_step(self.task, self.plan, self.opt, step, self.net,
                                          share=(lambda i: my_share(i, self.ranks)) if self.ranks.sharded else None)
                if step % 10 == 0:
                    stats.update(step, out, y, loss, self.ranks)
                bar.update()
        except BaseException:
            if self.tracker is not None:  # a measurement in flight is measured again on resume
                self.tracker.abandon()
            raise
        finally:
            bar.close()
        if self.tracker is not None:
            drained = self.tracker.worker is not None
            self.tracker.close()  # the last rows written, then a checkpoint that records them
            if drained:
                self.checkpoint(total)

    def summary(self) -> dict:
        task, wall, drops = self.task, self.wall(), self.plan.lr_drops()
        return {"steps": self.plan.total_steps, "epochs": self.cfg.epochs, "wall_seconds": wall,
                "lr_drops": {"step": drops, "epoch": [self.plan.epoch(s) for s in drops]},
                "segments": self.segments,
                "measure_seconds": self.measured(), "measure_share": self.measured() / wall if wall > 0 else 0.0,
                "measure_phases": dict(self.tracker.phase_seconds) if self.tracker else {},
                "checkpoint_seconds": self.checkpoint_seconds,
                "measurements": len({r["step"] for r in self.tracker.rows}) if self.tracker else 0,
                **_scores(task), "task_label": get_task(self.cfg.task).task_label}


def _scores(task: TaskData) -> dict:
    """Accuracy and loss on (the first 5,000 examples of) the training set and on the test set."""
    train = _evaluate(task.model, task.train_x[:5000], task.train_y[:5000], task.preprocess)
    test = _evaluate(task.model, task.test_x, task.test_y, task.preprocess)
    return {"train_accuracy": train[0], "test_accuracy": test[0], "train_loss": train[1], "test_loss": test[1]}


class _TrainStats:
    """Smoothed training loss and accuracy for the progress bar; stops a diverged run."""

    def __init__(self):
        self.loss = self.acc = None

    def update(self, step: int, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, ranks: Ranks) -> None:
        # Over the ranks, so that every rank reaches the same verdict on a diverging run.
        both = torch.stack([loss.detach().float(), (out.detach().argmax(1) == y).float().mean()])
        lv, av = mean_over_ranks(both, ranks).tolist()
        if not math.isfinite(lv):
            raise FloatingPointError(f"training diverged at step {step} (loss {lv}); lower --lr")
        self.loss = lv if self.loss is None else 0.9 * self.loss + 0.1 * lv
        self.acc = av if self.acc is None else 0.9 * self.acc + 0.1 * av

    def postfix(self, tracker: UsableInfoTracker, layer: str) -> dict:
        """Training loss and accuracy, and the last layer's latest bits per label set, named
        ``layer/label``."""
        rows = {lab: tracker.latest(layer, lab) for lab in tracker.label_names}  # None: still on its way
        bits = {f"{layer}/{lab}": f"{r['bits']:.2f}b" if r["bits"] is not None else r["status"]
                for lab, r in rows.items() if r}
        return bits if self.loss is None else {"loss": f"{self.loss:.3f}", "acc": f"{self.acc:.2f}", **bits}


def run_experiment(cfg: RunConfig, out_dir: str, *, resume: bool = False, progress: bool = True,
                   tensorboard: str | os.PathLike | None = None) -> dict:
    """Trains and tracks as configured; returns the summary (also written to summary.json).
    ``tensorboard``: a directory that also gets the rows as TensorBoard scalars."""
    joined = join_from_env(cfg.device)
    try:
        return _run_on_every_rank(cfg, RunDir(out_dir), resume, progress, tensorboard)
    finally:
        if joined:
            leave_process_group()


def _run_on_every_rank(cfg: RunConfig, files: RunDir, resume: bool, progress: bool, tensorboard) -> dict | None:
    """The run; under torchrun every rank trains and measures, and rank 0 alone writes the run
    directory and returns the summary (the others return None)."""
    ranks = Ranks.current()
    try:
        files.prepare(cfg, resume, write=ranks.main)
        barrier(ranks)  # config.json is there before any rank reads the run directory
        run = _train(cfg, files, resume, progress, tensorboard if cfg.track and ranks.main else None)
        barrier(ranks)
        if not ranks.main:
            return None
        summary = run.summary()
        atomic_write_json(files.summary, summary)
        if run.tracker is not None:
            from .plots import plot_runs

            plot_runs([files.root], files.figure)
        return summary
    finally:
        files.release()


def _train(cfg: RunConfig, files: RunDir, resume: bool, progress: bool, tensorboard) -> _Run:
    sinks = [] if tensorboard is None else [TensorBoardSink(tensorboard)]
    try:
        run = _Run(cfg, files, resume, sinks)
        run.task.model.train()
        run.loop(progress)
        return run
    finally:
        for sink in sinks:
            sink.close()


def load_run(run_dir: str) -> tuple[RunConfig, list[dict]]:
    """(config, log rows) of a run directory."""
    files = RunDir(run_dir)
    if not os.path.exists(files.config):
        raise FileNotFoundError(f"{run_dir} has no config.json; is it a uinfo-fast run directory?")
    return RunConfig.from_json(json.load(open(files.config))), read_log(files.log)
