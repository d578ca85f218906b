"""The run configuration: everything a run depends on, saved as ``config.json`` in its directory."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..engine.estimator import EstimatorOptions
from ..engine.params import (Boolean, Choice, Integer, ListOf, NoneOr, Real, Text, check_param, flat_fields, option,
                             validate_fields)
from ..tasks.registry import get_task
from ..tracking.capture import CaptureOptions
from ..tracking.schedule import Schedule

LR_SCHEDULES = ("constant", "cosine", "step")
DEVICE_TYPES = ("cpu", "cuda")
_POSITIVE = Real(0.0, low_open=True)


def _run_schedule() -> Schedule:
    return Schedule(every=160, early_until=160, early_points=4)


@dataclass(init=False)
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory.

    The defaults are the main job: the digit set's run (docs/RESULTS.md, "The digit set"). Other
    tasks and datasets bring their own on top (``Task.defaults``, ``Task.dataset_defaults``,
    applied by :meth:`for_task`). How a measurement is made is three options objects, nested
    whole: ``schedule`` (when), ``estimator`` (the probes) and ``capture`` (the features); their
    fields also go by flat names (``track_every``, ``l2_grid``, ``pool``, ...: :data:`FLAT`),
    which :meth:`for_task`, :meth:`replace` and the command line take."""

    task: str = option("images", check=Text(), help="a registered task: images (a ResNet trained on coarse "
                                                     "labels) or checkerboard")
    dataset: str | None = option(None, check=NoneOr(Text()),
                                 help="the task's data: images: digits or synthetic (built in), cifar100 or "
                                      "cifar10; checkerboard: synthetic")
    data_dir: str | None = option(None, check=NoneOr(Text()),
                                  help="cifar100 / cifar10: directory holding cifar-100-python/ or "
                                       "cifar-10-batches-py/ (or where it goes)")
    download: bool = option(False, check=Boolean(), help="cifar100 / cifar10: download the archive into data_dir "
                                                         "if it is not there")
    coarse_groups: list[list[int]] | None = option(
        None, check=NoneOr(ListOf(ListOf(Integer()))),
        help="cifar10 / digits: train on the group of the class, groups separated by '/', classes by ',' "
             "(none: 0,1,2,3,4/5,6,7,8,9)")
    n_train: int = option(10_000, check=Integer(1), help="training examples of the built-in sets (cifar: all)")
    n_test: int = option(2_000, check=Integer(1), help="test examples of the built-in sets (cifar: all)")
    width: int = option(8, check=Integer(1, 1024), help="ResNet-18 base width (64: the standard network)")
    epochs: float = option(20.0, check=_POSITIVE, help="training epochs")
    batch_size: int = option(32, check=Integer(1), help="SGD batch size")
    lr: float = option(0.1, check=_POSITIVE, help="SGD learning rate")
    momentum: float = option(0.9, check=Real(0.0, 1.0, high_open=True), help="SGD momentum")
    weight_decay: float = option(2e-3, check=Real(0.0), help="SGD weight decay")
    lr_schedule: str = option("step", check=Choice(LR_SCHEDULES),
                              help="constant, cosine, or step (x0.1 at 50% and 75% of training)")
    warmup_epochs: float = option(2.0, check=Real(0.0), help="linear learning-rate warm-up epochs (0: none)")
    augment: bool = option(False, check=Boolean(), help="random crop and flip of the training images")
    coherences: list[float] | None = option(None, check=NoneOr(ListOf(Real(0.0, 1.0, low_open=True))),
                                            help="checkerboard: colour coherence levels (none: the learnable ones)")
    hidden: list[int] | None = option(None, check=NoneOr(ListOf(Integer(1))),
                                      help="checkerboard: hidden layer sizes (none: 100,100)")
    input_coding: str = option("board", check=Choice(("board", "four")),
                               help="checkerboard: board (noisy squares and targets) or four (targets, red and "
                                    "green coherence)")
    fresh_trials: bool = option(False, check=Boolean(), negative="fixed_trials",
                                help="checkerboard: redraw every trial's noise each time it is seen")
    shuffled_control: bool = option(False, check=Boolean(),
                                    help="also probe a permuted copy of the irrelevant label, label set 'shuffled': "
                                         "the noise floor")
    early_steps: int = option(0, check=Integer(0), help="perturbed early training: number of steps")
    early_lr: float | None = option(None, check=NoneOr(_POSITIVE),
                                    help="perturbed early training: learning rate (none: lr)")
    early_batch_size: int | None = option(None, check=NoneOr(Integer(1)),
                                          help="perturbed early training: batch size (none: batch_size)")
    track: bool = option(True, check=Boolean(), help="measure usable information (off: train only, the baseline of "
                                                     "the overhead benchmark)")
    layers: list[str] | None = option(None, check=NoneOr(ListOf(Text())),
                                      help="module names to probe, comma-separated (none: the task's stages)")
    label_sets: list[str] | None = option(None, check=NoneOr(ListOf(Text())),
                                          help="label sets to probe, comma-separated (none: the task's)")
    probe_train: int = option(1_000, check=Integer(1),
                              help="fixed probe-training inputs from the training set (about 50 per class or more)")
    probe_val: int = option(300, check=Integer(0),
                            help="fixed inputs to choose the penalty on, from the test split (0: carve them from "
                                 "the probe-training ones)")
    probe_test: int = option(700, check=Integer(1),
                             help="fixed probe-test inputs from the test split, disjoint from the validation ones")
    async_tracking: bool = option(False, check=Boolean(),
                                  help="fit the probes on a background worker while training goes on (pays on a GPU)")
    schedule: Schedule = option(factory=_run_schedule, group=Schedule, help="when to measure")
    estimator: EstimatorOptions = option(factory=EstimatorOptions, group=EstimatorOptions,
                                         help="the probes and the estimate (its seed is the run's)")
    capture: CaptureOptions = option(factory=CaptureOptions, group=CaptureOptions,
                                     help="how layer outputs become probe features")
    seed: int = option(0, check=Integer(), help="seed of data, model, batches and probes")
    device: str = option("cpu", check=Text(), help="cpu, cuda or cuda:N")

    def __init__(self, **options):
        """Options by field name or by flat name (:data:`FLAT`): a nested options object whole
        (``estimator=EstimatorOptions(...)``, or as a dict) or field by field (``l2_grid=...``),
        the fields on top of the object. What is not given takes its default."""
        unknown = sorted(set(options) - set(FLAT) - set(_GROUPS))
        if unknown:
            raise TypeError(f"RunConfig has no options {unknown}; see uinfo-fast run --help")
        nested: dict[str, dict] = {}
        for k, v in options.items():
            owner, f = FLAT.get(k, (None, None))
            if owner is not None:
                nested.setdefault(owner, {})[f.name] = v
        for f in dataclasses.fields(self):
            value = options[f.name] if f.name in options else _default(f.name)
            if f.name in _GROUPS:
                value = _GROUPS[f.name](**value) if isinstance(value, dict) else value
                value = dataclasses.replace(value, **nested[f.name]) if f.name in nested else value
            setattr(self, f.name, value)
        self.__post_init__()

    def __post_init__(self):
        task = get_task(self.task)
        self.dataset = task.default_dataset if self.dataset is None else self.dataset
        check_param("dataset", self.dataset, Choice(task.dataset_names))
        self._nest()
        validate_fields(self)
        task.check_config(self)  # its own fields; it refuses those of other tasks
        device_type = self.device.split(":")[0]
        if device_type not in DEVICE_TYPES or (":" in self.device and not self.device.split(":")[1].isdigit()):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def _nest(self) -> None:
        """Each nested option an object of its class; the estimator's seed is the run's."""
        for name, group in _GROUPS.items():
            if not isinstance(getattr(self, name), group):
                raise TypeError(f"{name} must be a {group.__name__}, got {type(getattr(self, name)).__name__}")
        self.estimator = dataclasses.replace(self.estimator, seed=self.seed)

    def to_json(self) -> dict:
        """The config as ``config.json`` holds it (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def resolved(self) -> RunConfig:
        """This config with the layers and label sets it leaves to its task named (what
        ``config.json`` and checkpoints record)."""
        task = get_task(self.task)
        return self.replace(layers=task.layers_of(self), label_sets=task.label_sets_of(self))

    def same_run(self, other: RunConfig) -> bool:
        """Whether ``other`` describes the same run, the task's defaults resolved on both sides."""
        return self.resolved() == other.resolved()

    def flat(self) -> dict:
        """{flat name: value} of every option (:data:`FLAT`), as the command line names them."""
        return {k: getattr(self if owner is None else getattr(self, owner), f.name)
                for k, (owner, f) in FLAT.items()}

    def differences(self, other: RunConfig) -> dict:
        """{flat name: (this config's value, ``other``'s)} of every option where they differ."""
        mine, theirs = self.flat(), other.flat()
        return {k: (v, theirs[k]) for k, v in mine.items() if theirs[k] != v}

    def replace(self, **flat) -> RunConfig:
        """This config with the options named by their flat names set."""
        return RunConfig(**{**self.flat(), **flat})

    @classmethod
    def for_task(cls, task: str = "images", **overrides) -> RunConfig:
        """The task's defaults, its dataset's on top (the dataset ``overrides`` names, else the
        task's default), and ``overrides`` (flat names) on top of both."""
        spec = get_task(task)
        dataset = overrides.get("dataset") or spec.default_dataset
        return cls(**{"task": task, **spec.defaults, **spec.dataset_defaults.get(dataset, {}), **overrides})

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        """The config a ``config.json`` holds: options nested or, as configs were written before
        they nested, flat. A field it lacks (written before the field existed) takes the value
        that reproduces the run as it was made (``_BEFORE_IT_EXISTED``), else its default."""
        unknown = sorted(set(d) - set(FLAT) - set(_GROUPS))
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        return cls(**{**_BEFORE_IT_EXISTED, **d})


# The options by flat name; the estimator's seed is the run's, not an option of its own.
FLAT = flat_fields(RunConfig, skip={("estimator", "seed")})
_GROUPS = {f.name: f.metadata["group"] for f in dataclasses.fields(RunConfig) if f.metadata.get("group")}


def _default(name: str):
    f = RunConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# Fields whose default is not what runs did before the field was added.
_BEFORE_IT_EXISTED = {"warmup_epochs": 0.0}
