"""When the tracker measures: at the start, at log-spaced early steps, and every ``every`` steps."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.params import Boolean, Integer, NoneOr, Real, validate_params


@dataclass(frozen=True)
class Schedule:
    """When to measure: at step 0, at ``early_points`` log-spaced steps in [1, early_until]
    (where the paper's dynamics happen fastest), and at every multiple of ``every``.

    With a ``budget`` (a share of wall time, e.g. 0.05), the tracker also measures at any other
    step while the time training has lost to tracking stays under that share of the wall time
    since tracking began: as often as the budget allows, never less often than ``every``.
    """

    every: int = 100
    early_until: int = 0
    early_points: int = 0
    at_start: bool = True
    budget: float | None = None

    _CONSTRAINTS = {"every": Integer(1), "early_until": Integer(0), "early_points": Integer(0),
                    "at_start": Boolean(), "budget": NoneOr(Real(0.0, 1.0, low_open=True, high_open=True))}

    def __post_init__(self):
        validate_params(self, self._CONSTRAINTS, "Schedule")
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

    def within_budget(self, lost_share: float) -> bool:
        """Whether a measurement beyond the fixed ones fits the budget, given the share of wall
        time tracking has cost training so far."""
        return self.budget is not None and lost_share < self.budget

    def steps(self, total: int) -> list[int]:
        """The steps in [0, total] at which a measurement is due."""
        return [s for s in range(total + 1) if self.due(s)]
