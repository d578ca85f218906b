"""Usable information inside a PyTorch Lightning run: one callback.

    callback = UsableInformationCallback(
        ["net.layer2", "net.layer4"],
        {"train": (probe_x, {"coarse": yc, "fine": yf}), "test": test_loader},
        schedule=Schedule(every=100, early_until=100, early_points=8), asynchronous=True)
    Trainer(callbacks=[callback], logger=TensorBoardLogger("tb")).fit(module, datamodule)

The callback makes a :class:`~uinfo_fast.tracking.UsableInfoTracker` on the LightningModule when
training starts, measures on the schedule after each training batch (the trainer's global step is
the step) and once more when training ends, and logs each row's scalars
(:func:`~uinfo_fast.integrations.row_scalars`) through every logger of the trainer at the step its
features were captured at, so rows that come late from the asynchronous worker land where they
belong. The model's train/eval modes and its
batch-norm statistics are as they were before each measurement (capture runs in eval and
inference mode and restores every submodule's mode).

Its state (the tracker's: the log's row count and digest, or the rows themselves when there is
no log file) goes into Lightning checkpoints; a run resumed from one cuts the log back to the
rows written before it, measures again the steps after it, and duplicates none. Saving a checkpoint
first waits for the measurements in flight, so none is lost. Under a DDP strategy every process
captures its shard of the probe inputs and the global-zero one fits, logs and writes
(``uinfo_fast.tracking.distributed``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..tracking.log import read_log
from ..tracking.schedule import Schedule
from ..tracking.tracker import UsableInfoTracker
from .probe_sets import check_callback_args, checkpoint_state, probe_splits, resumed
from .scalars import PREFIX, require, scalars_by_step

pl = require("lightning.pytorch", "lightning", "UsableInformationCallback")


class UsableInformationCallback(pl.Callback):
    """Measures usable information of ``layers`` of the LightningModule during ``fit``.

    Args:
        layers: names of submodules of the LightningModule (``named_modules()``), whose
            ``forward`` must take the probe inputs.
        probe_sets: {"train": ..., "test": ..., "val": ... (optional)}, each an (inputs, labels)
            pair or a loader of (inputs, labels) batches; labels are a tensor or a dict of label
            sets. Loaders are read once, when training starts.
        schedule: when to measure, in the trainer's global steps.
        log_path: optional JSONL log of the rows (the source of truth; cut back to the
            checkpoint's rows on resume).
        asynchronous: fit on a background worker while training goes on.
        prefix: the first part of every logged scalar's name.
        **tracker_options: passed to :class:`~uinfo_fast.tracking.UsableInfoTracker`: its
            ``estimator`` and ``capture`` options objects, ``max_in_flight``, ``when_full``,
            ``beyond``, or a field of either options object by name (``l2_grid``,
            ``n_bootstrap``, ``pool``, ...).
    """

    def __init__(self, layers: Sequence[str], probe_sets: Mapping, *, schedule: Schedule = Schedule(),
                 log_path: str | os.PathLike | None = None, asynchronous: bool = False, prefix: str = PREFIX,
                 **tracker_options):
        check_callback_args(layers, probe_sets, tracker_options)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a uinfo_fast.Schedule, got {type(schedule).__name__}")
        self.layers, self.probe_sets, self.schedule = list(layers), dict(probe_sets), schedule
        self.log_path, self.asynchronous, self.prefix = log_path, asynchronous, prefix
        self.tracker_options = tracker_options
        self.tracker: UsableInfoTracker | None = None
        self._restored: dict | None = None  # the tracker state of the checkpoint a run resumes from
        self._trainer = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, prefix=self.prefix)

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        self.tracker = self._make_tracker(pl_module, trainer.is_global_zero)
        if trainer.is_global_zero:
            _wandb_axes(trainer, self.prefix)
        self.tracker.step(trainer.global_step, epoch=float(trainer.current_epoch))

    def _make_tracker(self, pl_module, main: bool) -> UsableInfoTracker:
        splits = probe_splits(self.probe_sets)
        val = splits.get("val", (None, None))
        if self._restored is None and self.log_path is not None and main and read_log(self.log_path):
            raise FileExistsError(f"log_path {os.fspath(self.log_path)} already holds rows of another run; pick "
                                  "another log_path, delete it, or resume the run from its checkpoint (ckpt_path=...)")
        tracker = UsableInfoTracker(pl_module, self.layers, *splits["train"], *splits["test"], val_inputs=val[0],
                                    val_labels=val[1], log_path=self.log_path, schedule=self.schedule,
                                    asynchronous=self.asynchronous, sinks=[self._log_rows], **self.tracker_options)
        return resumed(tracker, self._restored)

    def _log_rows(self, rows: list[dict]) -> None:
        """Every logger of the trainer gets each step's scalars at that (capture) step."""
        for step, scalars in scalars_by_step(rows, self.prefix):
            for logger in self._trainer.loggers:
                logger.log_metrics(scalars, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.tracker is None:
            return
        epoch = trainer.current_epoch + (batch_idx + 1) / max(1, _batches_per_epoch(trainer))
        self.tracker.step(trainer.global_step, epoch=epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.tracker is None:
            return
        if self.tracker.last_step is None or trainer.global_step > self.tracker.last_step:
            self.tracker.measure(trainer.global_step, epoch=float(trainer.current_epoch))  # the trained network
        self.tracker.close()  # the last rows reach the log and the loggers

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.abandon()

    @property
    def rows(self) -> list[dict]:
        """The rows measured so far (those of a resumed run's checkpoint first)."""
        if self.tracker is not None:
            return list(self.tracker.rows)
        return list((self._restored or {}).get("rows", []))

    def state_dict(self) -> dict:
        """The tracker's :meth:`~uinfo_fast.tracking.UsableInfoTracker.state_dict`, once every
        measurement captured before the checkpoint is written."""
        if self.tracker is None:
            return dict(self._restored or {"rows": []})
        return checkpoint_state(self.tracker)

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or not ({"rows", "log_rows"} & set(state_dict)):
            raise ValueError(f"{type(self).__name__}: the checkpoint's state for {self.state_key} holds no log state")
        self._restored = dict(state_dict)


def _batches_per_epoch(trainer) -> int:
    n = trainer.num_training_batches
    return int(n) if isinstance(n, (int, float)) and n != float("inf") else 1


def _wandb_axes(trainer, prefix: str) -> None:
    """W&B's own step only moves forward: the callback's metrics are plotted against the trainer's
    global step that Lightning's WandbLogger logs beside them, so late rows land at their step."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.define_metric("trainer/global_step")
            logger.experiment.define_metric(f"{prefix}/*", step_metric="trainer/global_step")
