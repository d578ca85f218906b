"""Usable information inside a Hugging Face ``Trainer`` run: one callback.

    callback = UsableInformationTrainerCallback(
        ["hidden_states.2", "hidden_states.4"],
        {"train": (probe_batch, {"topic": y_topic, "style": y_style}), "test": (test_batch, test_labels)},
        schedule=Schedule(every=50), pool="first")
    trainer = Trainer(model, args, train_dataset=train, callbacks=[callback])
    callback.attach(trainer)   # its rows then also reach trainer.log, so every report_to sees them
    trainer.train()

Probe inputs are dicts of tensors as the model takes them (``input_ids``, ``attention_mask``, ...;
the mask decides which tokens a token pool reads) or tensors; layers are module names or
``hidden_states.<i>``. The callback makes a :class:`~uinfo_fast.tracking.UsableInfoTracker` when
training begins, measures on the schedule at the end of each optimiser step (the Trainer's global
step is the step) and once more when training ends. Under distributed training it measures on the
main process only, by itself; the other processes train on.

Checkpoints: its JSON-able state (the log's row count and digest, or the rows themselves without
a log file) is saved by the Trainer's own mechanism for stateful callbacks, and the probes' last
fits (tensors, the next measurement's warm start) are written into the checkpoint's folder. A run
resumed from a checkpoint with ``TrainingArguments(restore_callback_states_from_checkpoint=True)``
cuts the log back to the rows written before it, measures again the steps after it, and
duplicates none. The Trainer restores a callback by making it anew from its saved arguments; this
one's only argument is its ``name``, and it stands for the callback of that name made in the
resuming process, which carries the probe sets.
"""
from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Mapping, Sequence

import torch

from ..tracking.distributed import alone
from ..tracking.log import read_log
from ..tracking.schedule import Schedule
from ..tracking.tracker import UsableInfoTracker
from .probe_sets import check_callback_args, checkpoint_state, probe_splits, resumed
from .scalars import PREFIX, require, scalars_by_step

trainer_callback = require("transformers.trainer_callback", "transformers", "UsableInformationTrainerCallback")

DEFAULT_NAME = "usable_information"


class UsableInformationTrainerCallback(trainer_callback.TrainerCallback, trainer_callback.ExportableState):
    """Measures usable information of ``layers`` of the Trainer's model during ``train``.

    Args:
        layers: module names of the model (``named_modules()``) or ``hidden_states.<i>``.
        probe_sets: {"train": ..., "test": ..., "val": ... (optional)}, each an (inputs, labels)
            pair (inputs a dict of tensors or a tensor; labels a tensor or a dict of label sets)
            or a loader of such batches, read once when training begins.
        schedule: when to measure, in the Trainer's global steps.
        log_path: optional JSONL log of the rows (the source of truth; cut back to the
            checkpoint's rows on resume).
        asynchronous: fit on a background worker while training goes on.
        prefix: the first part of every logged scalar's name.
        sinks: more callables given each batch of new rows (TensorBoard, W&B sinks).
        name: the callback's name in the Trainer's checkpoints; give two callbacks two names.
        **tracker_options: passed to :class:`~uinfo_fast.tracking.UsableInfoTracker` (``pool``,
            ``l2_grid``, ``n_bootstrap``, the ``estimator`` and ``capture`` options objects, ...).
    """

    _live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __new__(cls, layers: Sequence[str] | None = None, probe_sets: Mapping | None = None, *,
                name: str = DEFAULT_NAME, **kwargs):
        if layers is None and probe_sets is None:  # the Trainer restoring a checkpoint's state
            live = cls._live.get(name)
            if live is None:
                raise ValueError(f"{cls.__name__}: a checkpoint holds the state of the callback named {name!r}; "
                                 "make that callback (with its layers and probe sets) and pass it to the Trainer")
            return live
        return super().__new__(cls)

    def __init__(self, layers: Sequence[str] | None = None, probe_sets: Mapping | None = None, *,
                 schedule: Schedule = Schedule(), log_path: str | os.PathLike | None = None,
                 asynchronous: bool = False, prefix: str = PREFIX, sinks: Sequence = (), name: str = DEFAULT_NAME,
                 **tracker_options):
        if layers is None and probe_sets is None:
            return  # restored: __new__ gave back the live callback, which keeps what it holds
        check_callback_args(layers, probe_sets, tracker_options)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a uinfo_fast.Schedule, got {type(schedule).__name__}")
        self.layers, self.probe_sets, self.schedule = list(layers), dict(probe_sets), schedule
        self.log_path, self.asynchronous, self.prefix = log_path, asynchronous, prefix
        self.sinks, self.name, self.tracker_options = list(sinks), name, tracker_options
        self.tracker: UsableInfoTracker | None = None
        self.trainer = None
        self.restored: dict | None = None  # set by the Trainer from a checkpoint (state()'s attributes)
        self._live[name] = self

    def attach(self, trainer) -> UsableInformationTrainerCallback:
        """Sends the rows to ``trainer.log`` too (its log history and every ``report_to``
        integration), adding the callback to the trainer when it is not there yet."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return self

    @property
    def warm_file(self) -> str:
        return f"{self.name}_warm_start.pt"

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if state.global_step > 0 and self.restored is None:
            raise ValueError(f"{type(self).__name__}: resuming at step {state.global_step} needs the callback's "
                             "state from the checkpoint: TrainingArguments(restore_callback_states_from_checkpoint="
                             "True)")
        if self.trainer is None:
            warnings.warn(f"{type(self).__name__} is not attached to its Trainer: its rows reach its log and sinks "
                          "but not trainer.log; call callback.attach(trainer)", stacklevel=2)
        self.tracker = self._make_tracker(model)
        if self.restored is not None:
            self._load_warm_start(args.output_dir, state.global_step)
        self.tracker.step(state.global_step, epoch=state.epoch or 0.0)

    def _make_tracker(self, model) -> UsableInfoTracker:
        splits = probe_splits(self.probe_sets)
        val = splits.get("val", (None, None))
        if self.restored is None and self.log_path is not None and read_log(self.log_path):
            raise FileExistsError(f"log_path {os.fspath(self.log_path)} already holds rows of another run; pick "
                                  "another log_path, delete it, or resume the run from its checkpoint")
        with alone():  # the main process measures by itself
            tracker = UsableInfoTracker(model, self.layers, *splits["train"], *splits["test"], val_inputs=val[0],
                                        val_labels=val[1], log_path=self.log_path, schedule=self.schedule,
                                        asynchronous=self.asynchronous, sinks=[self._log_rows, *self.sinks],
                                        **self.tracker_options)
        return resumed(tracker, self.restored)

    def _load_warm_start(self, output_dir: str, step: int) -> None:
        path = os.path.join(output_dir, f"checkpoint-{step}", self.warm_file)
        if not os.path.exists(path):
            warnings.warn(f"{path} is missing: the first measurement after resuming fits from a cold start",
                          stacklevel=3)
            return
        self.tracker.load_warm_state(torch.load(path, weights_only=False, map_location="cpu"))

    def _log_rows(self, rows: list[dict]) -> None:
        """Each step's scalars through ``trainer.log``; ``<prefix>/step`` says the step the
        features were captured at (an asynchronous row arrives some steps later)."""
        if self.trainer is None:
            return
        for step, scalars in scalars_by_step(rows, self.prefix):
            self.trainer.log({**scalars, f"{self.prefix}/step": float(step)})

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.step(state.global_step, epoch=state.epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is None:
            return
        if self.tracker.last_step is None or state.global_step > self.tracker.last_step:
            self.tracker.measure(state.global_step, epoch=state.epoch)  # the trained network
        self.tracker.close()  # the last rows reach the log, the sinks and trainer.log

    def state(self) -> dict:
        """The Trainer's checkpoint of this callback: its name, and the tracker's state once every
        measurement captured before the checkpoint is written."""
        return {"args": {"name": self.name}, "attributes": {"restored": self._tracker_state()}}

    def _tracker_state(self) -> dict | None:
        return self.restored if self.tracker is None else checkpoint_state(self.tracker)

    def on_save(self, args, state, control, **kwargs):
        """The probes' last fits, beside the checkpoint the Trainer has just written."""
        if self.tracker is None:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.tracker.warm_state(), os.path.join(folder, self.warm_file))

    @property
    def rows(self) -> list[dict]:
        """The rows measured so far (those of a resumed run's checkpoint first)."""
        if self.tracker is not None:
            return list(self.tracker.rows)
        return list((self.restored or {}).get("rows", []))
