"""The rows of one run and the file that keeps them: the one component the tracker, and through
it ``uinfo-fast run`` and the Lightning callback, writes and resumes with.

A :class:`RunLog` with a path appends each measurement's rows to a JSON-lines file, flushed and
fsynced before the append returns; it holds the file's writer lock (a second process is refused)
and cuts a torn last line off before its first append (:mod:`uinfo_fast.tracking.log`). Without a
path it keeps the rows in memory only.

Its state is small and JSON-able: how many rows the log holds, their digest, and the steps
measured but not written yet (an asynchronous measurement on its way). A checkpoint stores it;
:meth:`RunLog.load_state_dict` cuts the log back to the rows the checkpoint was written after,
after checking by digest that the file still holds them, so that the steps after it are
measured again and none twice. A log without a file carries its rows in the state instead.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from .log import JsonlLog, rows_digest


def empty_state() -> dict:
    """The state of a log with no rows: loading it starts a log over."""
    return {"log_rows": 0, "log_sha256": rows_digest([]).hexdigest(), "unwritten_steps": []}


class RunLog:
    """The rows of one run (see the module docstring).

    Args:
        path: the JSONL file (None: rows in memory only).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.file = JsonlLog(path, writer=True) if path is not None else None
        self.rows: list[dict] = self.file.read() if self.file else []
        self._digest = rows_digest(self.rows)
        self._unwritten: list[int] = []
        self._changed = threading.Condition()

    @property
    def path(self) -> str | None:
        return self.file.path if self.file else None

    @property
    def last_step(self) -> int | None:
        return max((r["step"] for r in self.rows), default=None)

    def expect(self, step: int) -> None:
        """Records that the rows of ``step`` are on their way (measured, not written yet)."""
        with self._changed:
            self._unwritten.append(step)

    def append(self, rows: Sequence[dict]) -> None:
        """Writes one step's rows: to the file (fsynced), then to :attr:`rows` and the digest."""
        with self._changed:
            if self.file is not None:
                self.file.append(rows)
            self.rows.extend(rows)
            rows_digest(rows, self._digest)
            if rows and rows[0]["step"] in self._unwritten:
                self._unwritten.remove(rows[0]["step"])
            self._changed.notify_all()

    def since(self, start: int) -> list[dict]:
        """The rows from index ``start`` on, as they stand (the worker may be appending)."""
        with self._changed:
            return self.rows[start:]

    def state_dict(self, wait_before: int | None = None, give_up: Callable[[], bool] = lambda: False) -> dict:
        """``{"log_rows", "log_sha256", "unwritten_steps"}`` (and ``"rows"`` when there is no
        file). With ``wait_before``, first waits until every step before it is written (until
        ``give_up()`` says that will not happen): a checkpoint at that step then loses none."""
        with self._changed:
            if wait_before is not None:
                self._changed.wait_for(lambda: all(s >= wait_before for s in self._unwritten) or give_up())
            state = {"log_rows": len(self.rows), "log_sha256": self._digest.hexdigest(),
                     "unwritten_steps": list(self._unwritten)}
            return state if self.file is not None else {**state, "rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        """Goes back to the rows ``state`` was taken after: the ones it carries, or the file's
        first ``log_rows`` rows once their digest matches; the file is cut back to them."""
        rows = list(state["rows"]) if "rows" in state else self._verified(state)
        with self._changed:
            if self.file is not None:
                self.file.rewrite(rows)
            self.rows, self._digest, self._unwritten = rows, rows_digest(rows), []

    def _verified(self, state: dict) -> list[dict]:
        """The rows of the file that ``state`` counts, checked against its digest."""
        if "log_rows" not in state:  # a checkpoint of 0.1: only its step says which rows are its own
            return [r for r in self.rows if r["step"] <= state["step"]]
        n, where = state["log_rows"], self.path or "the log in memory"
        if len(self.rows) < n:
            what = "is missing" if self.path and not os.path.exists(self.path) else f"holds {len(self.rows)} rows"
            raise ValueError(f"{where} {what}, but the checkpoint was written after {n} rows; restore the log, "
                             "or delete the checkpoint to run again from step 0")
        if rows_digest(self.rows[:n]).hexdigest() != state["log_sha256"]:
            raise ValueError(f"the first {n} rows of {where} are not the ones the checkpoint was written after "
                             "(another run's log or checkpoint?); restore the run's own files")
        return self.rows[:n]

    def close(self) -> None:
        """Lets another process write the file (this log may still append to it)."""
        if self.file is not None:
            self.file.close()
