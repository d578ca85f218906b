"""A background worker for measurements: jobs run one at a time, in the order they were
submitted, on a thread of their own and, on CUDA, on a side stream, so that training goes on
while the probes are fitted.

The bound counts measurements in flight (submitted and not yet written); other jobs (the rows
of a skipped measurement) always queue behind them, so rows reach the log in step order. An
exception in a job is kept and raised in the submitting thread at its next call; the jobs after
it are dropped, and every later call raises it again.

A worker nobody stopped is drained when the interpreter exits (``atexit``): its measurements
reach the log, and no job is still inside an op while the process tears down its thread pools
(which aborts the process). Where a job fails then, a warning names it; the process keeps the
exit code the script gave.
"""
from __future__ import annotations

import atexit
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Callable

import torch


_RUNNING: weakref.WeakSet = weakref.WeakSet()  # workers started and not stopped


@atexit.register
def _drain_at_exit() -> None:
    for worker in list(_RUNNING):
        pending = worker.pending_steps()
        try:
            worker.stop(drain=True)
        except BaseException as e:  # noqa: BLE001  (at exit there is nobody left to raise to)
            warnings.warn(f"uinfo-fast: a measurement still running at exit failed ({e!r}); the rows of steps "
                          f"{pending} may be missing from the log", RuntimeWarning, stacklevel=1)


class MeasurementWorker:
    """Runs submitted jobs in order on one background thread (on ``device``'s side stream on CUDA)."""

    def __init__(self, max_in_flight: int, device: torch.device):
        self.max_in_flight = max_in_flight
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._jobs: queue.Queue = queue.Queue()
        self._pending: list[int] = []  # steps of the measurements queued and not yet finished
        self._room = threading.Condition()
        self._in_flight = 0
        self._error: BaseException | None = None
        self._stopped = False
        self.busy_seconds = 0.0  # time the worker spent on jobs
        threads, self._started = torch.get_num_threads(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="uinfo-fast measurement", daemon=True)
        self._thread.start()
        _RUNNING.add(self)
        if self.stream is None:
            # The worker's thread count below is its own, but torch also keeps the last one set
            # as the default of threads started later: put the process's back.
            self._started.wait()
            torch.set_num_threads(threads)

    def has_room(self) -> bool:
        with self._room:
            return self._in_flight < self.max_in_flight

    def wait_for_room(self) -> None:
        with self._room:
            self._room.wait_for(lambda: self._in_flight < self.max_in_flight or self._error is not None)
        self.raise_error()

    def submit(self, job: Callable[[], None], *, counts: bool, ready: torch.cuda.Event | None = None,
               step: int | None = None) -> None:
        """Queues ``job``; ``counts``: it is a measurement, bounded by ``max_in_flight``;
        ``ready``: a CUDA event the job's inputs are complete at, on the submitting stream;
        ``step``: the training step it measures, named in warnings."""
        self.raise_error()
        with self._room:
            self._in_flight += counts
            self._pending.append(step)
        self._jobs.put((job, counts, ready))

    def pending_steps(self) -> list[int]:
        """The steps of the jobs queued or running."""
        with self._room:
            return [s for s in self._pending if s is not None]

    def drain(self) -> None:
        """Waits until every job submitted so far has run; raises a job's exception."""
        self._jobs.join()
        self.raise_error()

    def stop(self, drain: bool = True) -> None:
        """Drains (or drops the jobs not started) and ends the thread."""
        if not drain:
            self._stopped = True
        _RUNNING.discard(self)
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if drain:
            self.raise_error()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def raise_error(self) -> None:
        """Raises (at every call from then on) what a job raised."""
        if self._error is not None:
            raise RuntimeError(f"a background measurement failed: {self._error!r}") from self._error

    def _loop(self) -> None:
        if self.stream is None:
            # On CPU the worker shares the cores with training: one intra-op thread here keeps
            # the two thread teams from oversubscribing them. torch sets a thread's count from the
            # process default on its first use, so that use comes first, then the worker's own.
            torch.get_num_threads()
            torch.set_num_threads(1)
        self._started.set()
        while True:
            item = self._jobs.get()
            if item is None:
                self._jobs.task_done()
                return
            job, counts, ready = item
            try:
                if self._error is None and not self._stopped:
                    self._run(job, ready)
            except BaseException as e:  # noqa: BLE001  (kept, raised in the training thread)
                self._error = e
            finally:
                with self._room:
                    self._in_flight -= counts
                    self._pending.pop(0)
                    self._room.notify_all()
                self._jobs.task_done()

    def _run(self, job: Callable[[], None], ready) -> None:
        t0 = time.perf_counter()
        if self.stream is None:
            job()
        else:
            with torch.cuda.stream(self.stream):
                if ready is not None:
                    self.stream.wait_event(ready)
                job()
        self.busy_seconds += time.perf_counter() - t0
