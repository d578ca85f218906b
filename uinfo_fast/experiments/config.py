"""The run configuration: everything a run depends on, saved as ``config.json`` in its directory."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..engine.grid import DEFAULT_L2_GRID
from ..engine.params import Boolean, Choice, Integer, ListOf, NoneOr, Real, Text, check_param, validate_params
from ..tasks.registry import get_task
from ..tracking.capture import POOLS

LR_SCHEDULES = ("constant", "cosine", "step")
DEVICE_TYPES = ("cpu", "cuda")
_POSITIVE = Real(0.0, low_open=True)


@dataclass
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory.

    The defaults are the main job: the digit set's run (docs/RESULTS.md, "The digit set"). Other
    tasks and datasets bring their own on top (``Task.defaults``, ``Task.dataset_defaults``,
    applied by :meth:`for_task`)."""

    task: str = "images"              # a registered task: "images" (ResNet on coarse labels) or "checkerboard"
    dataset: str | None = None        # None: the task's first. images: "digits" or "synthetic" (built in),
                                      # "cifar100" or "cifar10"; checkerboard: "synthetic"
    data_dir: str | None = None       # cifar100 / cifar10: where cifar-100-python/ or cifar-10-batches-py/ is or goes
    download: bool = False
    # cifar10 / digits: the coarse label is the index of the group holding the class (None: 0-4 against 5-9)
    coarse_groups: list[list[int]] | None = None
    n_train: int = 10_000             # synthetic / digits / checkerboard size (cifar100 / cifar10: the full set)
    n_test: int = 2_000
    width: int = 8                    # ResNet-18 base width (64 is the standard network)
    epochs: float = 20.0
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-3
    lr_schedule: str = "step"         # constant | cosine | step (x0.1 at 50% and 75%)
    warmup_epochs: float = 2.0        # linear learning-rate warm-up over this many epochs (0: none)
    augment: bool = False             # random crop and flip (the digits are placed at random already)
    coherences: list[float] | None = None  # checkerboard: colour coherence levels (default LEARNABLE_COHERENCES)
    hidden: list[int] | None = None   # checkerboard: hidden layer sizes (default 100, 100)
    input_coding: str = "board"       # checkerboard: "board" (100 noisy squares + targets) or "four"
    fresh_trials: bool = False        # checkerboard: redraw every trial's noise each time it is seen
    shuffled_control: bool = False    # also probe a permuted copy of the irrelevant label (the noise floor)
    # Perturbed early training: lr / batch size for the first `early_steps` steps.
    early_steps: int = 0
    early_lr: float | None = None
    early_batch_size: int | None = None
    # Tracking
    track: bool = True
    layers: list[str] | None = None   # default: the task's stages
    label_sets: list[str] | None = None
    probe_train: int = 1_000          # fixed probe-training inputs, from the training set (>= 50 per class)
    probe_val: int = 300              # fixed inputs to choose the penalty on, from the test split (0: carve)
    probe_test: int = 700             # fixed probe-test inputs, from the test split, disjoint from val
    track_every: int = 160            # at least this often (with a track_budget, also in between)
    early_until: int = 160            # plus log-spaced measurements in [1, early_until]
    early_points: int = 4
    track_budget: float | None = None  # measure as often as this share of wall time allows
    async_tracking: bool = False      # fits on a background worker while training goes on
    # Up to 10: at 0.1, the top of the grid before, the choice sat at the top in most measurements
    # of the digit runs' last stage, and a probe of features that hold little overfitted below 0 bits.
    l2_grid: list[float] = field(default_factory=lambda: list(DEFAULT_L2_GRID))
    n_bootstrap: int = 200
    pool: str = "avg"                 # how conv maps become probe features: avg, max or flatten
    probe_tol: float = 1e-5           # max |gradient| of every probe; the chosen ones are polished further
    seed: int = 0
    device: str = "cpu"

    _CONSTRAINTS = {
        "data_dir": NoneOr(Text()), "download": Boolean(), "coarse_groups": NoneOr(ListOf(ListOf(Integer()))),
        "n_train": Integer(1), "n_test": Integer(1),
        "width": Integer(1, 1024), "epochs": _POSITIVE, "batch_size": Integer(1), "lr": _POSITIVE,
        "momentum": Real(0.0, 1.0, high_open=True), "weight_decay": Real(0.0), "lr_schedule": Choice(LR_SCHEDULES),
        "warmup_epochs": Real(0.0),
        "augment": Boolean(), "coherences": NoneOr(ListOf(Real(0.0, 1.0, low_open=True))),
        "early_steps": Integer(0), "early_lr": NoneOr(_POSITIVE), "early_batch_size": NoneOr(Integer(1)),
        "track": Boolean(), "layers": NoneOr(ListOf(Text())), "label_sets": NoneOr(ListOf(Text())),
        "probe_train": Integer(1), "probe_val": Integer(0), "probe_test": Integer(1), "track_every": Integer(1),
        "early_until": Integer(0), "early_points": Integer(0), "l2_grid": ListOf(Real(0.0)),
        "track_budget": NoneOr(Real(0.0, 1.0, low_open=True, high_open=True)), "async_tracking": Boolean(),
        "hidden": NoneOr(ListOf(Integer(1))), "input_coding": Choice(("board", "four")),
        "fresh_trials": Boolean(), "shuffled_control": Boolean(),
        "n_bootstrap": Integer(0), "pool": Choice(POOLS), "probe_tol": _POSITIVE, "seed": Integer(), "device": Text(),
    }

    def __post_init__(self):
        task = get_task(self.task)
        self.dataset = task.default_dataset if self.dataset is None else self.dataset
        check_param("dataset", self.dataset, Choice(task.dataset_names))
        validate_params(self, self._CONSTRAINTS)
        task.check_config(self)  # its own fields; it refuses those of other tasks
        device_type = self.device.split(":")[0]
        if device_type not in DEVICE_TYPES or (":" in self.device and not self.device.split(":")[1].isdigit()):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_task(cls, task: str = "images", **overrides) -> RunConfig:
        """The task's defaults, its dataset's on top (the dataset ``overrides`` names, else the
        task's default), and ``overrides`` on top of both."""
        spec = get_task(task)
        dataset = overrides.get("dataset") or spec.default_dataset
        return cls(**{"task": task, **spec.defaults, **spec.dataset_defaults.get(dataset, {}), **overrides})

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        """The config a ``config.json`` holds. A field it lacks (written before the field existed)
        takes the value that reproduces the run as it was made (``_BEFORE_IT_EXISTED``), else its default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        return cls(**{**_BEFORE_IT_EXISTED, **d})


# Fields whose default is not what runs did before the field was added.
_BEFORE_IT_EXISTED = {"warmup_epochs": 0.0}
