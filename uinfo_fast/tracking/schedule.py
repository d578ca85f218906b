"""When the tracker measures: at the start, at log-spaced early steps, and every ``every`` steps."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.params import Boolean, Integer, NoneOr, Real, option, validate_fields


@dataclass(frozen=True)
class Schedule:
    """When to measure: at step 0, at ``early_points`` log-spaced steps in [1, early_until]
    (where the paper's dynamics happen fastest), and at every multiple of ``every``.

    With a ``budget`` (a share of wall time, e.g. 0.05), the tracker also measures at any other
    step while the time training has lost to tracking stays under that share of the wall time
    since tracking began: as often as the budget allows, never less often than ``every``.
    """

    every: int = option(100, check=Integer(1), flag="track_every",
                        help="measure at every multiple of this many steps (with a budget, also in between)")
    early_until: int = option(0, check=Integer(0), help="log-spaced extra measurements in [1, this step]")
    early_points: int = option(0, check=Integer(0), help="how many log-spaced extra measurements")
    at_start: bool = option(True, check=Boolean(), flag="track_at_start", help="measure at step 0")
    budget: float | None = option(None, check=NoneOr(Real(0.0, 1.0, low_open=True, high_open=True)),
                                  flag="track_budget",
                                  help="also measure whenever tracking has cost training less than this share of "
                                       "wall time (e.g. 0.05; none: only on the schedule)")

    def __post_init__(self):
        validate_fields(self, "Schedule")
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
