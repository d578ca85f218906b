"""Usable information tracked inside any training loop.

    tracker = UsableInfoTracker(model, ["layer2", "layer4"], probe_x, {"coarse": yc, "fine": yf},
                                test_x, {"coarse": tc, "fine": tf}, log_path="run/log.jsonl",
                                schedule=Schedule(every=100, early_until=100, early_points=8))
    for step, (x, y) in enumerate(loader):
        ...                              # the caller's own training step
        tracker.step(step, epoch=epoch)  # measures when the schedule says so

Each measurement captures the layers' features on fixed probe inputs (eval mode, inference mode),
fits every (layer, label set, penalty) probe through the probe engine in one call, warm-started
from the previous measurement, and appends one JSON row per (layer, label set) to the log,
flushed and fsynced before training goes on: a run killed at any point keeps every row already
written. A measurement never stops training: a layer whose features are not finite (a diverging
network) or constant (a dead layer), and a label set with a single class, get rows that say so
(``status``) and hold no number.

Measuring often (every step, say) can be amortised (docs/DESIGN.md, "Measuring every step"):
``CaptureOptions(refresh=k)`` captures a k-th of the probe inputs per measurement and keeps the
others' features from the last k - 1 (all of them again when the rows just captured show that the
features moved by more than ``refresh_drift`` bits), and ``EstimatorOptions(full_grid_every=M)``
searches only the last choices' neighbours between full searches. Each row says how it was
made: ``mode`` ("exact" or "amortised"), ``features_from`` (the oldest step whose features it
used) and ``search``.

Asynchronous tracking (``asynchronous=True``) keeps only the capture on the training thread:
the fits, scores and log writes of a measurement run on a background worker (a thread, and a
side stream on CUDA) while training goes on, at most ``max_in_flight`` at a time; when that many
are in flight, ``when_full`` decides whether the next measurement waits or is skipped (its rows
say "skipped"). Rows reach the log in step order, each with the step its features were captured
at. ``close()`` (or leaving a ``with`` block) waits for the measurements in flight; an exception
in one is raised in the training thread at the next ``step()``.

Sinks (``sinks=[...]``, for example :class:`uinfo_fast.integrations.TensorBoardSink`) get every
new row after the log holds it, always on the training thread: at the measurement when
synchronous, at the next ``step()`` or ``close()`` when the rows come from the worker. The log
stays the source of truth: a sink that raises is warned about and dropped, and training goes on.

Under ``torch.distributed`` (DDP, ``torchrun``) make the tracker on every rank with the same probe
inputs and call ``step`` on every rank: each captures its shard, rank 0 fits, logs and feeds the
sinks (``distributed.py``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..engine.estimator import EstimatorOptions, estimate
from ..engine.inputs import Features
from ..engine.labels import Labels, check_label_splits, label_sets
from ..engine.params import Boolean, Choice, Integer, check_param, routed
from ..engine.results import UsableInformation, unmeasured_row
from ..engine.scoring import chosen_shift
from . import batches
from .capture import CaptureOptions, FeatureCapture, RollingFeatures
from .distributed import Ranks, unwrapped
from .log import measured
from .runlog import RunLog
from .schedule import Schedule
from .worker import MeasurementWorker

PHASES = ("capture", "fit", "polish", "score", "log")
_NUMBER = re.compile(r"-?\d[\d.]*(?:e[-+]?\d+)?")  # a warning's numbers, which vary between its rows


def _inputs(x, name: str, device, minimum: int, channels_last: bool, ranks: Ranks) -> batches.Inputs:
    """Probe inputs (this rank's shard of them) on the model's device, once: a tensor, or a dict of
    tensors (a tokenised batch); image batches in channels-last memory format, which the
    convolutions of a capture run faster on (bench/RESULTS.md)."""
    batches.checked(x, name, minimum)

    def placed(v: torch.Tensor) -> torch.Tensor:
        v = (ranks.shard(v) if ranks.sharded else v).to(device)
        return v.contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4 else v

    return batches.each(x, placed)


def _labels_on(labels, name: str, device) -> dict[str, torch.Tensor]:
    """Label sets moved to the model's device (a bare tensor is one set, ``BARE_LABEL``)."""
    sets = label_sets(labels, name)
    return {k: y.to(device) if isinstance(y, torch.Tensor) else y for k, y in sets.items()}


def screen(features: Features) -> dict[str, str]:
    """The status of every layer's features: "ok", "nonfinite_features" (NaN or Inf in any
    split) or "constant_features" (no variation on the train rows): one host synchronisation
    for all layers."""
    names = list(features.train)
    flags = []
    for n in names:
        splits = [features.train[n], features.test[n]] + ([features.val[n]] if features.val else [])
        finite = torch.stack([torch.isfinite(x).all() for x in splits]).all()
        spread = features.train[n].amax(0) - features.train[n].amin(0)
        flags.append(torch.stack([finite, (spread > 0).any()]))
    host = torch.stack(flags).tolist()
    return {n: "nonfinite_features" if not fin else ("ok" if varies else "constant_features")
            for n, (fin, varies) in zip(names, host)}


def _checked_sinks(sinks) -> list:
    if callable(sinks):
        raise TypeError(f"sinks must be a list of callables, got one {type(sinks).__name__}: pass [sink]")
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable) or not all(callable(s) for s in sinks):
        raise TypeError("sinks must be a list of callables that take a list of row dicts")
    return list(sinks)


def with_beyond(rows: list[dict], beyond: dict[str, str]) -> list[dict]:
    """``rows`` with ``beyond_bits`` on the rows of every label set ``k`` of ``beyond``: its usable
    information minus that of ``beyond_of`` = ``beyond[k]`` at the same layer (None when either
    holds no measurement).
    For a label that refines its reference (fine classes within coarse ones) it is the usable
    information about the label beyond the reference."""
    bits = {(r["feature_set"], r["label_set"]): r["bits"] if measured(r) else None for r in rows}
    out = []
    for r in rows:
        ref = beyond.get(r["label_set"])
        if ref is not None:
            a, b = bits[r["feature_set"], r["label_set"]], bits.get((r["feature_set"], ref))
            r = {**r, "beyond_bits": None if a is None or b is None else a - b, "beyond_of": ref}
        out.append(r)
    return out


def _stamped(stamp: dict, row: dict, seconds: float) -> dict:
    """A log row: the measurement's step, epoch, mode and the oldest step of its features, the
    row's fields, its seconds. ``mode`` is "exact" for a row measured on features all captured
    at its step, searching the whole penalty grid, "amortised" otherwise, and None for a
    measurement that was skipped (nothing captured)."""
    oldest = stamp.get("features_from")
    mode = None if oldest is None else (
        "exact" if oldest == stamp["step"] and row.get("search") in ("full", None) else "amortised")
    return {"step": stamp["step"], "epoch": stamp["epoch"], "mode": mode, "features_from": stamp.get("features_from"),
            **row, "seconds": seconds}


def _only(features: Features, names: list[str]) -> Features:
    pick = lambda d: None if d is None else {n: d[n] for n in names}  # noqa: E731
    return Features(pick(features.train), pick(features.val), pick(features.test))


class UsableInfoTracker:
    """Measures usable information of ``layers`` about every label set on a schedule.

    Args:
        model: any ``nn.Module``; ``layers`` name its submodules (see :class:`FeatureCapture`).
        train_inputs, train_labels: fixed probe-training inputs [N, ...] (or a dict of them, passed
            to the model as keyword arguments: a tokenised batch) and {name: [N] int64};
            a validation share (``val_fraction``) is carved out of them to pick the penalty.
        test_inputs, test_labels: fixed probe-test inputs and labels, scored for I_u.
        val_inputs, val_labels: optional fixed inputs, disjoint from the test ones, to choose the
            penalty on (see :func:`estimate_usable_information`); without them ``val_fraction``
            of the train inputs is held out instead. Prefer them when the train inputs come from
            the network's own training set.
        log_path: JSONL file the rows are appended to (None: keep them in memory only). The
            tracker holds its writer lock until :meth:`close` (another process writing it is
            refused) and cuts a torn last line off first (:func:`~uinfo_fast.tracking.log.repair_tail`).
        schedule: when :meth:`step` measures.
        estimator: an :class:`~uinfo_fast.engine.EstimatorOptions` (see
            :func:`estimate_usable_information`); its ``seed`` also seeds the capture's projections.
        capture: a :class:`~uinfo_fast.tracking.CaptureOptions` (pooling, projection, autocast,
            batch size, channels-last inputs).
        **shortcuts: fields of either options object by name, set on top (``l2_grid=...,
            n_bootstrap=..., seed=..., pool=..., batch_size=...``).
        asynchronous, max_in_flight, when_full: measure on a background worker (see the module
            docstring); ``when_full`` is "wait" or "skip".
        sinks: callables given each batch of new rows (a list of row dicts), on the training
            thread, in step order (see the module docstring).
        beyond: {label set: reference label set}: the rows of each such label set also carry
            ``beyond_bits``, its usable information minus the reference's at the same layer (for
            {"fine": "coarse"}: what a layer holds about the fine classes beyond the coarse ones).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], train_inputs: batches.Inputs, train_labels,
                 test_inputs: batches.Inputs, test_labels, *, val_inputs: batches.Inputs | None = None, val_labels=None,
                 log_path: str | os.PathLike | None = None, schedule: Schedule = Schedule(),
                 estimator: EstimatorOptions | None = None, capture: CaptureOptions | None = None,
                 asynchronous: bool = False, max_in_flight: int = 1, when_full: str = "wait",
                 sinks: Sequence[Callable[[list[dict]], None]] = (), beyond: dict[str, str] | None = None,
                 **shortcuts):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a uinfo_fast.Schedule, got {type(schedule).__name__}")
        opts = routed({"estimator": estimator or EstimatorOptions(), "capture": capture or CaptureOptions()},
                      shortcuts, "UsableInfoTracker")
        self.options, capture = opts["estimator"], opts["capture"]
        self.capture = FeatureCapture(unwrapped(model), layers, capture, seed=self.options.seed)
        self.rolling = RollingFeatures(capture.refresh)
        self._estimates = 0  # estimates made, for the estimator's full_grid_every
        device = next(iter(model.parameters()), torch.empty(0)).device
        self.ranks = Ranks.current()
        self._set_inputs(device, train_inputs, test_inputs, val_inputs, val_labels, capture.channels_last)
        self.labels, self.single_class = self._checked_labels(device, train_labels, test_labels, val_labels)
        self.schedule = schedule
        self.beyond = self._checked_beyond(beyond)
        self.sinks = _checked_sinks(sinks) if self.ranks.main else []
        self._check_worker_options(asynchronous, max_in_flight, when_full)
        # Only rank 0 writes; the other ranks capture their shards and hand them over. The log's
        # lock is taken once every argument has been checked, so a bad one leaves it free.
        self.log = RunLog(log_path if self.ranks.main else None)
        # Steps only move forward: a log that already holds rows continues after its last step
        # (rank 0's log, for every rank); its rows are not handed to the sinks again.
        self.last_step = self._agreed_step(self.log.last_step)
        self._delivered = len(self.log.rows)
        self._warned: set[tuple] = set()
        self.last: UsableInformation | None = None
        self.measure_seconds = 0.0  # training-thread seconds lost to tracking, over the whole run
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self._lost = 0.0            # ... in this process, for the budget and overhead()
        self.worker = self._make_worker(device, asynchronous, max_in_flight, when_full)
        self._started = time.perf_counter()

    def _check_worker_options(self, asynchronous, max_in_flight, when_full) -> None:
        self.asynchronous = check_param("asynchronous", asynchronous, Boolean())
        check_param("max_in_flight", max_in_flight, Integer(1))
        self.when_full = check_param("when_full", when_full, Choice(("wait", "skip")))

    def _make_worker(self, device, asynchronous, max_in_flight, when_full) -> MeasurementWorker | None:
        return MeasurementWorker(max_in_flight, device) if asynchronous and self.ranks.main else None

    def _agreed_step(self, step: int | None) -> int | None:
        if not self.ranks.sharded:
            return step
        agreed = self.ranks.agree(-1 if step is None else step)
        return None if agreed < 0 else agreed

    def _set_inputs(self, device, train_inputs, test_inputs, val_inputs, val_labels, channels_last) -> None:
        if (val_inputs is None) != (val_labels is None):
            raise ValueError("val_inputs and val_labels go together: give both or neither")
        given = {"train": train_inputs, "test": test_inputs, "val": val_inputs}
        self.n_rows = {k: 0 if x is None else batches.rows_of(batches.checked(x, f"{k}_inputs"))
                       for k, x in given.items()}
        self.train_inputs = _inputs(train_inputs, "train_inputs", device, 2, channels_last, self.ranks)
        self.test_inputs = _inputs(test_inputs, "test_inputs", device, 2, channels_last, self.ranks)
        self.val_inputs = (None if val_inputs is None else
                           _inputs(val_inputs, "val_inputs", device, 1, channels_last, self.ranks))

    def _checked_labels(self, device, train_labels, test_labels, val_labels) -> tuple[Labels | None, list[str]]:
        """The labels, validated once, and the label sets of a single train class, which get
        unmeasured rows. Class counts are fixed here, so that each measurement lays out the same
        probes (warm starts)."""
        given = [_labels_on(train_labels, "train_labels", device), _labels_on(test_labels, "test_labels", device),
                 None if val_labels is None else _labels_on(val_labels, "val_labels", device)]
        single = [k for k, y in given[0].items() if isinstance(y, torch.Tensor) and y.numel() and
                  bool((y == y[0]).all())]
        if len(single) == len(given[0]):
            return None, single
        given = [None if g is None else {k: v for k, v in g.items() if k not in single} for g in given]
        labels = check_label_splits(*given, None, self.n_rows, device, self.options.val_fraction, self.options.seed,
                                    rows_of="inputs", train_name="train_labels")
        return labels, single

    def _checked_beyond(self, beyond) -> dict[str, str]:
        if beyond is None:
            return {}
        if not isinstance(beyond, dict) or any(not isinstance(k, str) or not isinstance(v, str) for k, v in beyond.items()):
            raise TypeError("beyond must be a dict {label set: reference label set}")
        names = self.label_names
        for k, v in beyond.items():
            if k not in names or v not in names or k == v:
                raise ValueError(f"beyond: {k!r} and {v!r} must be two different label sets of {names}")
        return dict(beyond)

    @property
    def layers(self) -> list[str]:
        return self.capture.layers

    @property
    def label_names(self) -> list[str]:
        return (self.labels.names if self.labels else []) + self.single_class

    def step(self, step: int, epoch: float | None = None) -> list[dict] | None:
        """Measures if the schedule (or its budget) says so at ``step``; returns the new rows, []
        when they will come from the background worker, or None. Raises what a background
        measurement raised."""
        if self.worker is not None:
            self.deliver()
            self.worker.raise_error()
        return self.measure(step, epoch) if self.due(step) else None

    def due(self, step: int) -> bool:
        """Whether the schedule, or its budget, asks for a measurement at ``step``."""
        later = self.last_step is None or step > self.last_step
        if not later or self.schedule.due(step):
            return later
        within = self.schedule.within_budget(self.overhead())  # each rank's clock: rank 0's decides
        return bool(self.ranks.agree(within)) if self.ranks.sharded and self.schedule.budget else within

    def capture_features(self, step: int | None = None) -> Features | None:
        """The layers' features on the fixed probe inputs, at the model's current weights (under
        torch.distributed: every rank's shard, gathered to rank 0; None on the other ranks).
        With a ``step``, through the capture's rolling refresh (``CaptureOptions.refresh``): only
        the share of the inputs due at this measurement is run forward, unless it shows that the
        features have moved."""
        splits = {"train": self.train_inputs, "val": self.val_inputs, "test": self.test_inputs}
        with self.ranks.buffers_of_rank0(self.capture.model):
            mine = (self._rolled(step, splits) if step is not None else
                    {k: None if x is None else self.capture(x) for k, x in splits.items()})
            got = {k: None if f is None else self._joined(f, k) for k, f in mine.items()}
        return Features(got["train"], got["val"], got["test"]) if self.ranks.main else None

    def _rolled(self, step: int, splits: dict) -> dict:
        """This rank's features at ``step``: the part of the inputs due, and the parts kept
        longest too when the features have moved (:meth:`_stale_parts`)."""
        parts = self.rolling.begin(step)
        got = self.rolling.capture_splits(splits, parts, self.capture)
        stale = self._stale_parts(parts, got["test"]) if len(parts) < self.rolling.refresh else []
        if stale:
            got = self.rolling.capture_splits(splits, self.rolling.again(stale), self.capture)
        return got

    def _stale_parts(self, parts: list[int], test: dict[str, torch.Tensor]) -> list[int]:
        """The kept parts to capture again so that they err by at most ``refresh_drift`` bits
        (:meth:`RollingFeatures.stalest`), from how far the last chosen probes read the part just
        captured on its new and its kept features. Under torch.distributed the ranks hold shards
        of the inputs and rank 0 alone the probes: the parts go round without the check."""
        last, old = self.last, self.rolling.before.get("test")
        if self.ranks.sharded or last is None or self.labels is None or old is None:
            return []
        rows = self.rolling.rows(parts, batches.rows_of(self.test_inputs), batches.device_of(self.test_inputs))
        shift = chosen_shift(last, old, test, self.labels, rows)
        return self.rolling.stalest(shift, self.capture.options.refresh_drift)

    def _joined(self, features: dict, split: str):
        return self.ranks.gather_rows(features, self.n_rows[split]) if self.ranks.sharded else features

    def measure(self, step: int, epoch: float | None = None) -> list[dict]:
        """Measures now: one row per (layer, label set), appended to the log before returning
        (asynchronous: captured now, fitted and written by the worker; returns [])."""
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"step {step} is not after step {self.last_step}, the last one measured"
                             + (f" in {self.log.path}" if self.log.path else "") + "; steps must increase")
        stamp = {"step": int(step), "epoch": None if epoch is None else float(epoch)}
        t0 = time.perf_counter()
        self.last_step = int(step)
        if self.asynchronous:
            rows = self._hand_over(stamp, t0)
        else:
            features = self.capture_timed(stamp)
            rows = [] if features is None else self._finish(stamp, features, t0)
            self.deliver()
        lost = time.perf_counter() - t0
        self.measure_seconds += lost
        self._lost += lost
        return rows

    def capture_timed(self, stamp: dict) -> Features:
        """The features of the measurement at ``stamp["step"]``; adds to ``stamp`` the oldest step
        they come from (``features_from``)."""
        t0 = time.perf_counter()
        features = self.capture_features(stamp["step"])
        stamp["features_from"] = self.rolling.oldest
        self.phase_seconds["capture"] += time.perf_counter() - t0
        return features

    def _finish(self, stamp: dict, features: Features, t0: float) -> list[dict]:
        """Fits, scores and writes one measurement (on whichever thread runs it)."""
        rows = self.rows_for(features)
        return self._write([_stamped(stamp, r, time.perf_counter() - t0) for r in rows])

    def _write(self, rows: list[dict]) -> list[dict]:
        t1 = time.perf_counter()
        self.log.append(rows)
        self.phase_seconds["log"] += time.perf_counter() - t1
        return rows

    @property
    def rows(self) -> list[dict]:
        """Every row of the log: those it held when the tracker was made, then the new ones."""
        return self.log.rows

    def state_dict(self, wait_before: int | None = None) -> dict:
        """What a checkpoint needs to resume this tracker exactly: the log's state
        (:meth:`RunLog.state_dict`: its rows' count and digest, the steps on their way) and the
        seconds tracking has cost. With ``wait_before``, first waits until every step before it is
        written, so that a checkpoint at that step loses none of them."""
        failed = lambda: self.worker is None or self.worker.failed  # noqa: E731
        return {**self.log.state_dict(wait_before, give_up=failed), "measure_seconds": self.measure_seconds,
                "phase_seconds": dict(self.phase_seconds), "estimates": self._estimates}

    def warm_state(self) -> UsableInformation | None:
        """The last fits (tensors: probe weights per layer), which warm-start the next measurement;
        a checkpoint that saves them beside :meth:`state_dict` lets a resumed run fit from where
        the uninterrupted one would."""
        return self.last

    def load_warm_state(self, last: UsableInformation | None) -> None:
        """Warm-starts the next measurement from fits saved by :meth:`warm_state`."""
        self.last = last

    def load_state_dict(self, state: dict) -> None:
        """Continues from a checkpoint's :meth:`state_dict`: the log goes back to the rows written
        before it (they are not handed to the sinks again), and the steps after it will be
        measured again. Call it on every rank, before the first :meth:`step`."""
        if self.ranks.main:
            self.log.load_state_dict(state)
        self._delivered = len(self.log.rows)
        self.last_step = self._agreed_step(self.log.last_step)
        self.measure_seconds = float(state.get("measure_seconds", 0.0))
        self.phase_seconds.update(state.get("phase_seconds", {}))
        self._estimates = int(state.get("estimates", 0))  # where the full-grid cycle stood
        self.rolling.forget()  # the features kept were captured at other weights

    def _hand_over(self, stamp: dict, t0: float) -> list[dict]:
        """Captures on the training thread and queues the rest; with the worker full, waits or
        queues the rows of a skipped measurement instead (rank 0's worker decides for all)."""
        skip = self.when_full == "skip" and self.worker is not None and not self.worker.has_room()
        skip = bool(self.ranks.agree(skip)) if self.ranks.sharded else skip
        if not self.ranks.main:
            if not skip:
                self.capture_timed(stamp)
            return []
        self.log.expect(stamp["step"])
        if skip:
            skipped = [_stamped(stamp, unmeasured_row(n, k, "skipped"), 0.0)
                       for n in self.layers for k in self.label_names]
            self.worker.submit(lambda: self._write(skipped), counts=False, step=stamp["step"])
            return []
        self.worker.wait_for_room()
        features = self.capture_timed(stamp)
        stream, ready = self.worker.stream, None
        if stream is not None:  # the side stream starts when the capture's kernels are done
            ready = torch.cuda.Event()
            ready.record()
        self.worker.submit(lambda: self._finish_on_worker(stamp, features, t0, stream), counts=True, ready=ready,
                           step=stamp["step"])
        return []

    def _finish_on_worker(self, stamp: dict, features: Features, t0: float, stream) -> None:
        if stream is not None:  # made on the training stream, used on the side one
            for split in (features.train, features.val or {}, features.test):
                for x in split.values():
                    x.record_stream(stream)
        self._finish(stamp, features, t0)

    def close(self) -> None:
        """Waits for the measurements in flight and ends the worker (nothing to do when
        synchronous); raises what a background measurement raised."""
        self.asynchronous = False  # from here on a measurement runs on the calling thread
        try:
            if self.worker is not None:
                try:
                    self.worker.stop(drain=True)
                finally:
                    self.worker = None
                    self.deliver()
        finally:
            self._release_log()

    def _release_log(self) -> None:
        """Lets another process write the log (this tracker may still append to it)."""
        self.log.close()

    def deliver(self) -> None:
        """Hands the rows written since the last call to every sink (on the calling thread)."""
        if self._delivered == len(self.rows):  # the common case, every training step: no lock
            return
        new = self.log.since(self._delivered)
        self._delivered += len(new)
        if not new:
            return
        self._warn(new)
        for sink in list(self.sinks):
            try:
                sink(new)
            except Exception as e:  # a logger's failure must not stop the run; the log has the rows
                self.sinks.remove(sink)
                warnings.warn(f"usable-information sink {sink!r} failed and is dropped ({type(e).__name__}: "
                              f"{e}); the rows stay in the log", RuntimeWarning, stacklevel=2)

    def _warn(self, rows: list[dict]) -> None:
        """A Python warning the first time each (layer, label set) gets each kind of warning (its
        numbers aside): the log's rows carry every one."""
        for r in rows:
            if not r.get("warning"):
                continue
            key = (r["feature_set"], r["label_set"], r["status"], _NUMBER.sub("#", r["warning"]))
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"usable information of {r['feature_set']}/{r['label_set']} at step {r['step']} "
                              f"({r['status']}): {r['warning']} (later rows like it say so in their 'warning' field)",
                              RuntimeWarning, stacklevel=3)

    def abandon(self) -> None:
        """Ends the worker without writing the measurements not yet started (a run that stops
        on an error: its resume measures them again)."""
        self.asynchronous = False
        if self.worker is not None:
            self.worker.stop(drain=False)
            self.worker = None
        self._release_log()

    def __enter__(self) -> UsableInfoTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def rows_for(self, features: Features) -> list[dict]:
        """The measurement rows of every (layer, label set), in that order: measured where the
        layer's features and the label set allow, unmeasured (with a status) elsewhere."""
        status = screen(features)
        ok = [n for n in self.layers if status[n] == "ok"]
        measured = {}
        if ok and self.labels is not None:
            local = self._estimates % self.options.full_grid_every != 0
            self._estimates += 1
            res = estimate(_only(features, ok), self.labels, self.options,
                           warm_start=self.last if self.options.warm_start else None, local=local)
            # Layers not measured this time keep their last fits, to warm-start from when they recover.
            self.last = dataclasses.replace(res, fits={**(self.last.fits if self.last else {}), **res.fits})
            for phase, s in res.timings.items():
                self.phase_seconds[phase] += s
            measured = {(r.feature_set, r.label_set): r.row() for r in res.results}
        rows = [measured.get((n, k)) or unmeasured_row(n, k, "single_class" if k in self.single_class else status[n])
                for n in self.layers for k in self.label_names]
        return with_beyond(rows, self.beyond)

    def overhead(self) -> float:
        """Share of the wall time since the tracker was made that the training thread lost to
        tracking: every measurement when synchronous; the captures and any waiting for a full
        worker when asynchronous."""
        total = time.perf_counter() - self._started
        return self._lost / total if total > 0 else 0.0

    def latest(self, feature_set: str, label_set: str) -> dict | None:
        """The last row of (layer, label set): None before its first measurement has been written;
        a ValueError naming the choices for a layer or label set the tracker does not measure."""
        for name, value, choices in (("feature_set", feature_set, self.layers), ("label_set", label_set,
                                                                                self.label_names)):
            if value not in choices:
                raise ValueError(f"{name} {value!r} is not one the tracker measures; it measures {choices}")
        for r in reversed(self.rows):
            if r["feature_set"] == feature_set and r["label_set"] == label_set:
                return r
        return None
