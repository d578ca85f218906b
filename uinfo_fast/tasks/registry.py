"""The task registry: a task is its data, its network and its label sets, in one place.

A run (``uinfo_fast.experiments``) asks the registry for the task its config names and calls
``task.build(config)``; nothing else branches on the task's name. Adding a task is a module
that defines a :class:`Task` and one line in ``_BUILT_IN`` (or a call to :func:`register_task`
from the user's own code).
"""
from __future__ import annotations

import dataclasses
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
class Dataset:
    """A dataset a task trains on, declared once by that task.

    ``load(config)`` gives its (train, test) splits in the form the task's ``build`` takes;
    ``stats`` are the channel statistics its inputs are normalised with (None: inputs that need
    none); ``grouped`` says that its coarse label is a grouping of its classes that
    ``config.coarse_groups`` may choose; ``defaults`` are a run's config defaults on it, on top of
    its task's; ``folder`` is what it is read from under ``config.data_dir`` (None: built in).
    """

    name: str
    load: Callable[..., tuple]
    stats: object | None = None
    grouped: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)
    folder: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Dataset name must be a non-empty string, got {self.name!r}")
        if not callable(self.load):
            raise TypeError(f"Dataset load must be a callable (config) -> (train, test), got {self.load!r}")

    def splits(self, cfg) -> tuple:
        """(train, test) as ``load`` gives them for ``cfg``; a ValueError when the dataset is read
        from a folder and ``cfg.data_dir`` names none."""
        if self.folder is not None and cfg.data_dir is None:
            raise ValueError(f"dataset {self.name!r} needs data_dir (the directory that holds {self.folder}/)")
        return self.load(cfg)


@dataclass(frozen=True)
class Task:
    """A task a run can train on.

    ``label_sets`` are the labels a run can probe (the first ones by default);
    ``task_label`` is the one the network is trained on and ``irrelevant_label`` the one the
    paper contrasts with it (the fine classes; the checkerboard's colour). ``datasets`` are the
    :class:`Dataset` declarations ``config.dataset`` names (the first is the default), ``defaults``
    the task's own config defaults (each dataset's go on top of them), ``build`` makes the run's
    :class:`TaskData` from a config, and ``data_tag`` names the data in a default run directory.
    ``options`` are the task-specific config fields this task reads (a run of another task
    refuses them) and ``check(config)``, when given, checks their values for this task, raising a
    ValueError that names the field, and may put a value in the form config.json gives back
    (:meth:`check_config` runs it). ``beyond`` maps a label set to one it refines (fine classes to their
    coarse ones): runs log the usable information about it beyond that one. ``default_layers(config)``
    names the layers a config that names none measures (None: the task's build decides, and
    ``config.json`` records none).
    """

    name: str
    label_sets: tuple[str, ...]
    task_label: str
    irrelevant_label: str
    datasets: tuple[Dataset, ...]
    build: Callable[..., TaskData]
    data_tag: Callable[..., str]
    defaults: Mapping[str, object] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    check: Callable[..., None] | None = None
    beyond: Mapping[str, str] = field(default_factory=dict)
    default_layers: Callable[..., list[str]] | None = None

    def __post_init__(self):
        if not (isinstance(self.datasets, tuple) and self.datasets
                and all(isinstance(d, Dataset) for d in self.datasets)):
            raise TypeError(f"Task datasets must be a non-empty tuple of uinfo_fast.tasks.Dataset, "
                            f"got {self.datasets!r}")

    @property
    def dataset_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.datasets)

    @property
    def default_dataset(self) -> str:
        """The dataset a config that names none gets."""
        return self.defaults.get("dataset", self.datasets[0].name)

    @property
    def dataset_defaults(self) -> dict[str, Mapping[str, object]]:
        """Each dataset's config defaults, by name."""
        return {d.name: d.defaults for d in self.datasets}

    def dataset(self, name: str) -> Dataset:
        """The dataset called ``name``; a ValueError lists the choices."""
        for d in self.datasets:
            if d.name == name:
                return d
        raise ValueError(f"dataset must be one of {self.dataset_names} for the {self.name} task, got {name!r}")

    def layers_of(self, cfg) -> list[str] | None:
        """The layers a run of ``cfg`` measures: its own, else the task's default ones."""
        if cfg.layers is not None or self.default_layers is None:
            return cfg.layers
        return list(self.default_layers(cfg))

    def label_sets_of(self, cfg) -> list[str]:
        """The label sets a run of ``cfg`` probes: its own, else every one of the task's."""
        return list(cfg.label_sets) if cfg.label_sets is not None else list(self.label_sets)

    def check_config(self, cfg) -> None:
        """Refuses a task-specific field of ``cfg`` (one the built-in tasks list in ``options``)
        that this task does not read, unless it has its default, then runs ``check``."""
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        for name in _task_specific_fields():
            if name not in self.options and getattr(cfg, name) != defaults[name]:
                raise ValueError(f"{name} is not an option of the {self.name} task (its options: {list(self.options)})")
        if self.check is not None:
            self.check(cfg)


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


def _task_specific_fields() -> list[str]:
    """The config fields that only some tasks read: the options of the built-in tasks. A
    registered task reads what it likes of the others and lists which of these it reads."""
    return list(dict.fromkeys(o for name in _BUILT_IN for o in get_task(name).options))


def build_task(cfg) -> TaskData:
    """The data, network and probe sets of the task ``cfg.task``, built as ``cfg`` says."""
    return get_task(cfg.task).build(cfg)
