"""The run log: JSON lines, one row per (measurement step, feature set, label set), and the one
helper for files that must never be left half-written.

This module imports neither torch nor the compiled extension, so logs can be read and plotted
anywhere.

Row schema: ``step``, ``epoch``, then the estimator's measurement fields
(:data:`uinfo_fast.engine.results.MEASUREMENT_FIELDS`), then ``seconds``. Logs written before
the package was restructured (0.1) named the feature set ``layer``; :func:`read_log` renames
it, so old runs read and plot as new ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import IO

# Renamed fields of logs and result files written by uinfo-fast 0.1 -> their names now.
LEGACY_FIELDS = {"layer": "feature_set", "usable_information_bits": "bits", "ci_low_bits": "ci_low",
                 "ci_high_bits": "ci_high", "test_cross_entropy_nats": "test_ce_nats"}


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
