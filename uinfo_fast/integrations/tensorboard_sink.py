"""The tracker's rows as TensorBoard scalars."""
from __future__ import annotations

import os

from .scalars import PREFIX, require, scalars_by_step


class TensorBoardSink:
    """Writes every row the tracker hands it as TensorBoard scalars (see :func:`row_scalars`) at
    the step its features were captured at, and flushes, so the event file is current after each
    measurement.

        tb = TensorBoardSink("runs/tb")
        tracker = UsableInfoTracker(..., sinks=[tb])
        ...
        tracker.close(); tb.close()

    Args:
        log_dir: the directory of the event files (``tensorboard --logdir`` it).
        prefix: the first part of every scalar's name.
    """

    def __init__(self, log_dir: str | os.PathLike, prefix: str = PREFIX):
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path, got {type(log_dir).__name__}")
        writer = require("torch.utils.tensorboard", "tensorboard", "TensorBoardSink").SummaryWriter
        self.log_dir, self.prefix = os.fspath(log_dir), prefix
        self.writer = writer(log_dir=self.log_dir)

    def __call__(self, rows: list[dict]) -> None:
        for step, scalars in scalars_by_step(rows, self.prefix):
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardSink({self.log_dir!r})"
