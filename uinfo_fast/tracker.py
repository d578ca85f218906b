"""Usable information tracked inside any training loop.

    tracker = UsableInfoTracker(model, ["layer2", "layer4"], probe_x, {"coarse": yc, "fine": yf},
                                test_x, {"coarse": tc, "fine": tf}, log_path="run/log.jsonl",
                                schedule=Schedule(every=100, early_until=100, early_points=8))
    for step, (x, y) in enumerate(loader):
        ...                              # the caller's own training step
        tracker.step(step, epoch=epoch)  # measures when the schedule says so

Each measurement captures the layers' features on fixed probe inputs (eval mode, no grad),
fits every (layer, label set, penalty) probe through the probe engine, warm-started from the
previous measurement, and appends one JSON row per (layer, label set) to the log, flushed and
fsynced before training goes on: a run killed at any point keeps every row already written.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .capture import FeatureCapture
from .usable_information import DEFAULT_L2_GRID, UsableInformation, estimate_usable_information


@dataclass(frozen=True)
class Schedule:
    """When to measure: at step 0, at ``early_points`` log-spaced steps in [1, early_until]
    (where the paper's dynamics happen fastest), and at every multiple of ``every``."""

    every: int = 100
    early_until: int = 0
    early_points: int = 0
    at_start: bool = True

    def __post_init__(self):
        for name in ("every", "early_until", "early_points"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Schedule.{name} must be an int >= 0, got {v!r}")
        if self.every < 1:
            raise ValueError(f"Schedule.every must be >= 1, got {self.every}")
        if self.early_points > 0 and self.early_until < 1:
            raise ValueError("Schedule.early_points needs early_until >= 1")

    def _early(self) -> frozenset[int]:
        if self.early_points == 0:
            return frozenset()
        if self.early_points == 1:
            return frozenset({self.early_until})
        ratio = self.early_until ** (1.0 / (self.early_points - 1))
        return frozenset(int(round(ratio ** i)) for i in range(self.early_points))

    def due(self, step: int) -> bool:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step == 0:
            return self.at_start
        return step % self.every == 0 or step in self._early()

    def steps(self, total: int) -> list[int]:
        """The steps in [0, total] at which a measurement is due."""
        return [s for s in range(total + 1) if self.due(s)]


class JsonlLog:
    """Append-only JSON-lines log; each append is flushed and fsynced before it returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict]:
        return read_log(self.path)

    def truncate_after(self, step: int) -> int:
        """Keeps the rows of steps <= ``step`` (and drops a torn last line); returns rows kept.

        Written to a temporary file and renamed over the log, so a kill during the rewrite
        leaves either the old log or the new one, never half of one.
        """
        rows = [r for r in self.read() if r["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return len(rows)


def read_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL log; a torn last line (a kill during a write) is ignored."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line can be torn
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return rows


def _label_dict(labels, name: str, n: int, device) -> dict[str, torch.Tensor]:
    if isinstance(labels, torch.Tensor):
        labels = {"label": labels}
    if not isinstance(labels, Mapping) or not labels:
        raise TypeError(f"{name} must be a non-empty mapping label-set name -> [N] int64 tensor")
    out = {}
    for k, y in labels.items():
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            raise TypeError(f"{name}[{k!r}] must be a 1-D int64 tensor of class indices")
        if y.shape[0] != n:
            raise ValueError(f"{name}[{k!r}] has {y.shape[0]} labels but the inputs have {n} rows")
        out[k] = y.to(device)
    return out


class UsableInfoTracker:
    """Measures usable information of ``layers`` about every label set on a schedule.

    Args:
        model: any ``nn.Module``; ``layers`` name its submodules (see :class:`FeatureCapture`).
        train_inputs, train_labels: fixed probe-training inputs [N, ...] and {name: [N] int64};
            a validation share (``val_fraction``) is carved out of them to pick the penalty.
        test_inputs, test_labels: fixed probe-test inputs and labels, scored for I_u.
        val_inputs, val_labels: optional fixed inputs, disjoint from the test ones, to choose the
            penalty on (see :func:`estimate_usable_information`); without them ``val_fraction``
            of the train inputs is held out instead. Prefer them when the train inputs come from
            the network's own training set.
        log_path: JSONL file the rows are appended to (None: keep them in memory only).
        schedule: when :meth:`step` measures.
        l2_grid, n_bootstrap, confidence, val_fraction, max_iter, tol: the estimator's options.
        pool, project_to, autocast_dtype, batch_size: the capture's options.
        seed: validation split, bootstrap and projections.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], train_inputs: torch.Tensor, train_labels,
                 test_inputs: torch.Tensor, test_labels, *, log_path: str | os.PathLike | None = None,
                 schedule: Schedule = Schedule(), l2_grid=DEFAULT_L2_GRID, n_bootstrap: int = 200,
                 confidence: float = 0.95, val_fraction: float = 0.2, max_iter: int = 1000, tol: float = 1e-5,
                 pool: str = "avg", project_to: int | None = None, autocast_dtype: torch.dtype | None = None,
                 batch_size: int = 256, seed: int = 0, val_inputs: torch.Tensor | None = None, val_labels=None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a uinfo_fast.Schedule, got {type(schedule).__name__}")
        self.capture = FeatureCapture(model, layers, pool=pool, project_to=project_to, seed=seed,
                                      autocast_dtype=autocast_dtype)
        for name, x in (("train_inputs", train_inputs), ("test_inputs", test_inputs)):
            if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 2:
                raise ValueError(f"{name} must be a tensor [N, ...] with N >= 2")
        device = next(iter(model.parameters()), torch.empty(0)).device
        self.train_inputs = train_inputs.to(device)
        self.test_inputs = test_inputs.to(device)
        self.train_labels = _label_dict(train_labels, "train_labels", train_inputs.shape[0], device)
        self.test_labels = _label_dict(test_labels, "test_labels", test_inputs.shape[0], device)
        if (val_inputs is None) != (val_labels is None):
            raise ValueError("val_inputs and val_labels go together: give both or neither")
        self.val_inputs = self.val_labels = None
        if val_inputs is not None:
            if not isinstance(val_inputs, torch.Tensor) or val_inputs.dim() < 1 or val_inputs.shape[0] < 1:
                raise ValueError("val_inputs must be a tensor [N, ...] with N >= 1")
            self.val_inputs = val_inputs.to(device)
            self.val_labels = _label_dict(val_labels, "val_labels", val_inputs.shape[0], device)
            if set(self.val_labels) != set(self.train_labels):
                raise ValueError(f"val_labels name other label sets than train_labels: {sorted(self.val_labels)}")
        if set(self.train_labels) != set(self.test_labels):
            raise ValueError(f"train_labels and test_labels name different label sets: "
                             f"{sorted(self.train_labels)} vs {sorted(self.test_labels)}")
        # Class counts fixed once, so every measurement lays out the same probes (warm starts).
        self.num_classes = {k: int(max(self.train_labels[k].max(), self.test_labels[k].max(),
                                       *([self.val_labels[k].max()] if self.val_labels else []))) + 1
                            for k in self.train_labels}
        self.schedule = schedule
        self.log = JsonlLog(log_path) if log_path is not None else None
        self.options = dict(l2_grid=l2_grid, n_bootstrap=n_bootstrap, confidence=confidence,
                            val_fraction=val_fraction, max_iter=max_iter, tol=tol, seed=seed)
        self.batch_size = batch_size
        self.rows: list[dict] = []
        self.last: UsableInformation | None = None
        self.measure_seconds = 0.0
        self._started = time.perf_counter()

    @property
    def layers(self) -> list[str]:
        return self.capture.layers

    def step(self, step: int, epoch: float | None = None) -> list[dict] | None:
        """Measures if the schedule says so at ``step``; returns the new rows or None."""
        if not self.schedule.due(step):
            return None
        return self.measure(step, epoch)

    def measure(self, step: int, epoch: float | None = None) -> list[dict]:
        """Measures now: one row per (layer, label set), appended to the log before returning."""
        t0 = time.perf_counter()
        feats_train = self.capture(self.train_inputs, self.batch_size)
        feats_test = self.capture(self.test_inputs, self.batch_size)
        val = {}
        if self.val_inputs is not None:
            val = dict(val_features=self.capture(self.val_inputs, self.batch_size), val_labels=self.val_labels)
        res = estimate_usable_information(feats_train, self.train_labels, feats_test, self.test_labels,
                                          num_classes=self.num_classes, warm_start=self.last, **val, **self.options)
        self.last = res
        seconds = time.perf_counter() - t0
        rows = []
        for r in res.results:
            rows.append({
                "step": int(step),
                "epoch": None if epoch is None else float(epoch),
                "layer": r.feature_set,
                "label_set": r.label_set,
                "bits": r.bits,
                "ci_low": None if math.isnan(r.ci_low) else r.ci_low,
                "ci_high": None if math.isnan(r.ci_high) else r.ci_high,
                "test_ce_nats": r.test_ce_nats,
                "entropy_bits": r.entropy_bits,
                "l2": r.l2,
                "converged": r.converged,
                "seconds": seconds,
            })
        if self.log is not None:
            self.log.append(rows)
        self.rows.extend(rows)
        self.measure_seconds += time.perf_counter() - t0
        return rows

    def overhead(self) -> float:
        """Share of the wall time since the tracker was made that went into measuring."""
        total = time.perf_counter() - self._started
        return self.measure_seconds / total if total > 0 else 0.0

    def latest(self, layer: str, label_set: str) -> dict | None:
        for r in reversed(self.rows):
            if r["layer"] == layer and r["label_set"] == label_set:
                return r
        return None
