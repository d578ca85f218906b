"""Probe sets, shared by the tasks: fixed subsets of a task's inputs, drawn once from the seed,
with the label sets a run probes (and the shuffled-label control)."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .registry import Task

# The label set of the shuffled-label control (``RunConfig.shuffled_control``): its usable
# information is the measurement's noise floor.
SHUFFLED = "shuffled"


def probe_indices(cfg, n_train: int, n_test: int):
    """Fixed probe subsets, chosen once from the seed: train rows, and disjoint test and
    validation rows of the test split (validation None when ``cfg.probe_val`` is 0)."""
    gen = torch.Generator().manual_seed(cfg.seed + 101)
    if cfg.probe_test + cfg.probe_val > n_test:
        raise ValueError(f"probe_test + probe_val = {cfg.probe_test + cfg.probe_val} exceeds the {n_test} test examples")
    train = torch.randperm(n_train, generator=gen)[:min(cfg.probe_train, n_train)]
    perm = torch.randperm(n_test, generator=gen)
    val = perm[cfg.probe_test:cfg.probe_test + cfg.probe_val] if cfg.probe_val > 0 else None
    return train, perm[:cfg.probe_test], val


def probe_sets(cfg, task: Task, train_x, train_labels: dict, test_x, test_labels: dict, prepare=lambda x: x):
    """(probe_train_x, its labels, probe_test_x, its labels, probe_val_x, its labels) for the
    label sets the config asks for (the task's own when it names none), drawn by :func:`probe_indices`."""
    names = task.label_sets_of(cfg)
    for k in names:
        if k not in task.label_sets:
            raise ValueError(f"label_sets: the {task.name} task has {list(task.label_sets)}, got {k!r}")
    tr, te, va = probe_indices(cfg, train_x.shape[0], test_x.shape[0])
    gen = torch.Generator().manual_seed(cfg.seed + 202)

    def pick(x, labels, idx):
        if idx is None:
            return None, None
        out = {k: labels[k][idx] for k in names}
        if cfg.shuffled_control:  # the irrelevant label, permuted: its marginal, no relation to the input
            out[SHUFFLED] = labels[task.irrelevant_label][idx][torch.randperm(idx.shape[0], generator=gen)]
        return prepare(x[idx]), out

    _warn_if_starved(int(tr.numel()), {k: train_labels[k] for k in names})
    return (*pick(train_x, train_labels, tr), *pick(test_x, test_labels, te), *pick(test_x, test_labels, va))


# A softmax probe fitted on fewer examples per class than this reads the label's information
# poorly, and its estimate moves with the draw of the probe set (docs/DESIGN.md, section 5).
PROBE_EXAMPLES_PER_CLASS = 50


def _warn_if_starved(probe_train: int, labels: dict) -> None:
    """Warns, naming the option, when ``probe_train`` gives a label set fewer than
    PROBE_EXAMPLES_PER_CLASS examples per class."""
    for name, y in labels.items():
        classes = int(torch.unique(y).numel())
        if probe_train < PROBE_EXAMPLES_PER_CLASS * classes:
            warnings.warn(f"probe_train={probe_train} gives the {classes} '{name}' classes "
                          f"{probe_train / classes:.0f} probe examples each; the estimate needs about "
                          f"{PROBE_EXAMPLES_PER_CLASS} per class (probe_train >= "
                          f"{PROBE_EXAMPLES_PER_CLASS * classes})", stacklevel=3)
