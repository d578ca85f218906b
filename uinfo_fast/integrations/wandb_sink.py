"""The tracker's rows as Weights & Biases metrics, on their own x-axis."""
from __future__ import annotations

from .scalars import PREFIX, require, scalars_by_step


class WandbSink:
    """Logs every row the tracker hands it to a W&B run (see :func:`row_scalars`).

    W&B's own step only moves forward, and rows from an asynchronous tracker arrive after
    training has gone on, so the metrics get their own x-axis: ``<prefix>/step``, the step the
    features were captured at (``define_metric``). A late row lands at its capture step.

        run = wandb.init(project="uinfo")
        tracker = UsableInfoTracker(..., sinks=[WandbSink(run)])

    Args:
        run: a ``wandb`` run (default: the active one, ``wandb.run``).
        prefix: the first part of every metric's name.
    """

    def __init__(self, run=None, prefix: str = PREFIX):
        wandb = require("wandb", "wandb", "WandbSink")
        self.run = run if run is not None else wandb.run
        if self.run is None:
            raise ValueError("WandbSink needs a W&B run: call wandb.init(...) first or pass run=")
        self.prefix, self.step_metric = prefix, f"{prefix}/step"
        self.run.define_metric(self.step_metric)
        self.run.define_metric(f"{prefix}/*", step_metric=self.step_metric)

    def __call__(self, rows: list[dict]) -> None:
        for step, scalars in scalars_by_step(rows, self.prefix):
            self.run.log({**scalars, self.step_metric: step})

    def __repr__(self) -> str:
        return f"WandbSink(run={getattr(self.run, 'name', None)!r})"
