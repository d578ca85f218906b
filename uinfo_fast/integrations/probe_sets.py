"""What every training-framework callback takes the same way: the probe sets and the tracker's
options, checked once, before any training starts."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence

import torch

from ..engine.estimator import EstimatorOptions
from ..engine.labels import BARE_LABEL
from ..tracking import batches
from ..tracking.capture import CaptureOptions
from ..tracking.tracker import UsableInfoTracker

SPLITS = ("train", "test", "val")
# Tracker options a callback sets itself; every other keyword of the tracker passes through.
_OWN = {"self", "model", "layers", "train_inputs", "train_labels", "test_inputs", "test_labels", "val_inputs",
        "val_labels", "log_path", "schedule", "asynchronous", "sinks", "shortcuts"}
TRACKER_OPTIONS = (frozenset(inspect.signature(UsableInfoTracker.__init__).parameters) - _OWN
                   | {f.name for cls in (EstimatorOptions, CaptureOptions) for f in dataclasses.fields(cls)})


def _labels_of(y, name: str) -> dict:
    if isinstance(y, torch.Tensor):
        return {BARE_LABEL: y}
    if isinstance(y, Mapping):
        return dict(y)
    raise TypeError(f"{name}: labels must be a tensor or a dict of label tensors, got {type(y).__name__}")


def _on_cpu(x: batches.Inputs) -> batches.Inputs:
    return batches.each(x, lambda v: v.detach().cpu())


def _from_batches(loader: Iterable, name: str) -> tuple[batches.Inputs, dict]:
    """(inputs, labels) of every batch of a loader, joined on the CPU (token batches padded to
    the longest: :func:`~uinfo_fast.tracking.batches.concatenated`)."""
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"{name}: a loader must yield (inputs, labels) batches, got {type(batch).__name__}")
        xs.append(_on_cpu(batch[0]))
        ys.append({k: v.detach().cpu() for k, v in _labels_of(batch[1], name).items()})
    if not xs:
        raise ValueError(f"{name}: the loader yielded no batch")
    return batches.concatenated(xs, name), {k: torch.cat([y[k] for y in ys]) for k in ys[0]}


def probe_split(source, name: str) -> tuple[batches.Inputs, dict]:
    """One probe split as (inputs, {label set: labels}): from an (inputs, labels) pair, inputs a
    tensor or a dict of tensors (a tokenised batch), or from a loader (a DataLoader, for instance
    a DataModule's) yielding (inputs, labels) batches."""
    if isinstance(source, (tuple, list)) and len(source) == 2 and isinstance(source[0], (torch.Tensor, Mapping)):
        return source[0], _labels_of(source[1], name)
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes, torch.Tensor, Mapping)):
        return _from_batches(source, name)
    raise TypeError(f"{name} must be an (inputs, labels) pair or a loader of (inputs, labels) batches, "
                    f"got {type(source).__name__}")


def probe_splits(probe_sets: Mapping) -> dict[str, tuple[batches.Inputs, dict]]:
    """Every split of ``probe_sets`` as (inputs, labels); loaders are read here, once."""
    return {k: probe_split(v, f"probe_sets[{k!r}]") for k, v in probe_sets.items() if v is not None}


def check_callback_args(layers, probe_sets, tracker_options) -> None:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise TypeError("layers must be a non-empty list of module names, e.g. ['net.layer2', 'net.layer4']")
    if not isinstance(probe_sets, Mapping) or not {"train", "test"} <= set(probe_sets) <= set(SPLITS):
        keys = sorted(probe_sets) if isinstance(probe_sets, Mapping) else type(probe_sets).__name__
        raise ValueError(f"probe_sets must be a dict with keys 'train', 'test' and optionally 'val', got {keys}")
    unknown = sorted(set(tracker_options) - TRACKER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown tracker options {unknown}; UsableInfoTracker takes {sorted(TRACKER_OPTIONS)}")


def resumed(tracker: UsableInfoTracker, state: dict | None) -> UsableInfoTracker:
    """``tracker`` continued from a checkpoint's tracker ``state`` (None: as it was made); closed,
    its log lock released, when the state does not fit its log."""
    if state is not None:
        try:
            tracker.load_state_dict(state)
        except BaseException:
            tracker.close()
            raise
    return tracker


def checkpoint_state(tracker: UsableInfoTracker) -> dict:
    """The tracker's :meth:`~uinfo_fast.tracking.UsableInfoTracker.state_dict` for a checkpoint,
    once every measurement captured before it is written (none lost with the checkpoint)."""
    if tracker.worker is not None:
        tracker.worker.drain()
        tracker.deliver()
    return tracker.state_dict()
