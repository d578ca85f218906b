"""The run log: JSON lines, one row per (measurement step, feature set, label set), and the one
helper for files that must never be left half-written.

This module imports neither torch nor the compiled extension, so logs can be read and plotted
anywhere.

Row schema: ``step``, ``epoch``, ``mode`` and ``features_from`` (how the measurement was made,
:func:`uinfo_fast.tracking.tracker._stamped`), then the estimator's measurement fields
(:data:`uinfo_fast.engine.results.MEASUREMENT_FIELDS`), then ``seconds``. Logs written before
the package was restructured (0.1) named the feature set ``layer``; :func:`read_log` renames
it, so old runs read and plot as new ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import IO

try:
    import fcntl
except ImportError:  # no POSIX file locks (Windows): one writer per log is the caller's to keep
    fcntl = None

# Renamed fields of logs and result files written by uinfo-fast 0.1 -> their names now.
LEGACY_FIELDS = {"layer": "feature_set", "usable_information_bits": "bits", "ci_low_bits": "ci_low",
                 "ci_high_bits": "ci_high", "test_cross_entropy_nats": "test_ce_nats"}


def measured(row: dict) -> bool:
    """Whether a row holds a measurement: a number whose status is "ok". Rows of a probe that
    did not converge hold a number that is none, and unmeasured rows hold none at all."""
    return row.get("bits") is not None and row.get("status", "ok") == "ok"


def upgrade_row(row: dict) -> dict:
    """``row`` with the field names of the current schema."""
    if not any(k in row for k in LEGACY_FIELDS):
        return row
    return {LEGACY_FIELDS.get(k, k): v for k, v in row.items()}


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Writes a file through ``write(binary file)`` to a temporary name, fsyncs it and renames it
    over ``path``: a kill at any moment leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=indent).encode("utf-8")))


def _lines(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows_digest(rows: Sequence[dict], digest=None):
    """A sha256 over ``rows`` in a canonical JSON form (sorted keys), so that a log rewritten or
    read back gives the same digest; pass ``digest`` to extend a running one."""
    digest = digest if digest is not None else hashlib.sha256()
    for r in rows:
        digest.update((json.dumps(r, sort_keys=True) + "\n").encode("utf-8"))
    return digest


class LogBusy(RuntimeError):
    """Another process writes the log (or run directory) this one was to write."""


class WriterLock:
    """One writer per log: an exclusive OS file lock (``fcntl.flock``) on ``path``, held until
    :meth:`release` or the process ends (a killed writer's lock goes with it, so its run can be
    resumed). Within one process the lock is shared: a run and the tracker it makes hold the
    same one. The file names its holder, for the message a second writer gets."""

    _held: dict[str, list] = {}  # real path -> [open file, holders], this process's locks

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.held = os.path.realpath(os.fspath(path)), False
        entry = self._held.get(self.path)
        if entry is None:
            entry = [self._acquire(what), 0]
            self._held[self.path] = entry
        entry[1] += 1
        self.held = True

    def _acquire(self, what: str):
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            _flock(fh)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LogBusy(f"{what} is being written by {holder} (lock file {self.path}); wait for it to finish, "
                          "stop it, or write elsewhere") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n")
        fh.flush()
        return fh

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = self._held[self.path]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.path]
            _unlock(entry[0])
            entry[0].close()


def _flock(fh) -> None:
    """Takes the lock, raising BlockingIOError when another process holds it. Where the system
    has no file locks (Windows, some network file systems), warns and goes on unlocked: one
    writer per log is then the caller's to keep."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as e:
        warnings.warn(f"{fh.name}: file locks are not available here ({e}); a second process writing this log "
                      "would not be refused", RuntimeWarning, stacklevel=4)


def _unlock(fh) -> None:
    """Releases the lock for every holder of the open file, forked children (DataLoader workers)
    included: closing this process's copy alone would leave theirs holding it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        pass


def lock_path(log_path: str | os.PathLike) -> str:
    """The lock file of a log: beside it, the log's name with ``.lock``."""
    return os.fspath(log_path) + ".lock"


class JsonlLog:
    """Append-only JSON-lines log; each append is flushed and fsynced before it returns.

    With ``writer=True`` the log is opened for writing: it takes the log's :class:`WriterLock`
    (a second process refuses with a message naming the holder) and repairs a torn tail
    (:func:`repair_tail`) before anything is appended."""

    def __init__(self, path: str | os.PathLike, writer: bool = False):
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.lock = WriterLock(lock_path(self.path), f"log {self.path}") if writer else None
        if writer:
            repair_tail(self.path)

    def close(self) -> None:
        """Releases the writer's lock (nothing to do for a reader)."""
        if self.lock is not None:
            self.lock.release()

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(_lines(rows))
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict]:
        return read_log(self.path)

    def truncate_after(self, step: int) -> int:
        """Keeps the rows of steps <= ``step`` (and drops a torn last line); returns rows kept."""
        rows = [r for r in self.read() if r["step"] <= step]
        self.rewrite(rows)
        return len(rows)

    def rewrite(self, rows: Sequence[dict]) -> None:
        """Replaces the log by ``rows``, atomically."""
        atomic_write(self.path, lambda fh: fh.write(_lines(rows).encode("utf-8")))


_STEP = re.compile(rb'^\{"step": (\d+)[,}]')


def repair_tail(path: str | os.PathLike) -> int | None:
    """Cuts a torn last line off the log at ``path`` (a kill during a write leaves one; appending
    after it would merge it with the next row), with a warning. The rows of the torn row's
    step are cut with it, so that step counts as not measured and is measured again. Returns
    that step (None when the tail was whole, or its step cannot be read)."""
    path = os.fspath(path)
    if not os.path.exists(path) or _whole_tail(path):
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    whole = lines[:-1]  # the part after the last newline is "" when the tail is whole
    torn = lines[-1]
    if not torn.strip() and whole and not _is_json(whole[-1]):
        torn = whole.pop()  # a last line that ends but is no JSON (a block of zeros, say)
    if not torn.strip():
        return None
    if _is_json(torn):  # a whole row written without its newline (by hand, say): keep it
        with open(path, "ab") as fh:
            fh.write(b"\n")
        return None
    step = _step_of(torn)
    kept = [ln for ln in whole if ln.strip()]
    dropped = 0
    while step is not None and kept and _step_of(kept[-1]) == step:
        kept.pop()
        dropped += 1
    atomic_write(path, lambda fh: fh.write(b"".join(ln + b"\n" for ln in kept)))
    what = f"step {step}" if step is not None else "an unknown step"
    warnings.warn(f"{path}: its last line was torn ({len(torn)} bytes of {what}, a kill during a write?); it was cut "
                  f"off" + (f" with the {dropped} other rows of step {step}" if dropped else "")
                  + f", and {what} counts as not measured", RuntimeWarning, stacklevel=3)
    return step


def _whole_tail(path: str, chunk: int = 1 << 16) -> bool:
    """Whether the log ends in a whole row (or is empty), read from its last ``chunk`` bytes
    only: the common case costs no read of the whole log."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return True
        fh.seek(max(0, size - chunk))
        tail = fh.read()
    if not tail.endswith(b"\n"):
        return False
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    return (len(last) < len(tail) - 1 or size <= chunk) and (not last.strip() or _is_json(last))


def _step_of(line: bytes) -> int | None:
    """The step a log line starts with (rows are written with ``step`` first), None if none."""
    match = _STEP.match(line)
    return int(match.group(1)) if match else None


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def read_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL log in the current schema; a torn last line (a kill during a write) is
    ignored."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line can be torn
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}: line {i + 1} is not a log row (a JSON object with an integer 'step')")
        rows.append(upgrade_row(row))
    return rows
