"""The task registry: a task is its data, its network and its label sets, in one place.

A run (``uinfo_fast.experiments``) asks the registry for the task its config names and calls
``task.build(config)``; nothing else branches on the task's name. Adding a task is a module
that defines a :class:`Task` and one line in ``_BUILT_IN`` (or a call to :func:`register_task`
from the user's own code).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module

import torch
from torch import nn


@dataclass
class TaskData:
    """What a run needs from its task: training data, the network, and the fixed probe sets."""

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
    preprocess: Callable           # (batch, generator | None) -> float inputs on the device


@dataclass(frozen=True)
class Task:
    """A task a run can train on.

    ``label_sets`` are the labels a run can probe (the first ones by default);
    ``task_label`` is the one the network is trained on and ``irrelevant_label`` the one the
    paper contrasts with it (the fine classes; the checkerboard's colour). ``datasets`` are the
    values ``config.dataset`` may take (the first is the default), ``defaults`` the task's own
    config defaults and ``dataset_defaults`` those of one dataset on top of them, ``build``
    makes the run's :class:`TaskData` from a config, and ``data_tag`` names the data in a default
    run directory. ``options`` are the task-specific config fields this task reads (a run of
    another task refuses them). ``beyond`` maps a label set to one it refines (fine classes to
    their coarse ones): runs log the usable information about it beyond that one.
    """

    name: str
    label_sets: tuple[str, ...]
    task_label: str
    irrelevant_label: str
    datasets: tuple[str, ...]
    build: Callable[..., TaskData]
    data_tag: Callable[..., str]
    defaults: Mapping[str, object] = field(default_factory=dict)
    dataset_defaults: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def default_dataset(self) -> str:
        """The dataset a config that names none gets."""
        return self.defaults.get("dataset", self.datasets[0])
    options: tuple[str, ...] = ()
    beyond: Mapping[str, str] = field(default_factory=dict)


# Tasks that ship with the package: name -> module defining TASK (imported on first use).
_BUILT_IN = {"images": "uinfo_fast.tasks.images", "checkerboard": "uinfo_fast.tasks.checkerboard"}
_REGISTERED: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Makes ``task`` available to runs under ``task.name``."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a uinfo_fast.tasks.Task, got {type(task).__name__}")
    _REGISTERED[task.name] = task
    return task


def task_names() -> list[str]:
    return sorted(set(_BUILT_IN) | set(_REGISTERED))


def get_task(name: str) -> Task:
    """The task called ``name``; a ValueError lists the choices."""
    if name not in _REGISTERED and name in _BUILT_IN:
        register_task(import_module(_BUILT_IN[name]).TASK)
    if name not in _REGISTERED:
        raise ValueError(f"task must be one of {task_names()}, got {name!r}")
    return _REGISTERED[name]


def build_task(cfg) -> TaskData:
    """The data, network and probe sets of the task ``cfg.task``, built as ``cfg`` says."""
    return get_task(cfg.task).build(cfg)
