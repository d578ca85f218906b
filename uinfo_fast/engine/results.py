"""Results of the estimator, and the one row schema that its rows and the tracker's log share."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

LN2 = math.log(2.0)

# The fields of one measurement of one (feature set, label set) pair, in this order, in the
# estimator's rows and in every log row (the tracker adds step, epoch and seconds around them).
# Units are in the names: bits unless a name says nats.
MEASUREMENT_FIELDS = ("feature_set", "label_set", "status", "bits", "ci_low", "ci_high", "entropy_bits",
                      "test_ce_nats", "l2", "l2_grid", "search", "probe_family", "probe_hidden", "probe_restarts",
                      "num_classes", "converged", "unseen_test_rows", "warning")
# Why a row may hold no number: the features or labels it would measure (a diverging network,
# a dead layer, a label set of one class) give nothing a probe could be fitted on, or the
# measurement was skipped (an asynchronous tracker with its queue full).
UNMEASURED = ("nonfinite_features", "constant_features", "single_class", "skipped")
# A row with a number: "ok", or "not_converged" when the chosen probe stopped before its
# tolerance, so that its number depends on where the optimiser gave up and is no measurement.
STATUSES = ("ok", "not_converged") + UNMEASURED


def unmeasured_row(feature_set: str, label_set: str, status: str) -> dict:
    """A row of :data:`MEASUREMENT_FIELDS` with no number, saying why (one of :data:`UNMEASURED`)."""
    if status not in UNMEASURED:
        raise ValueError(f"status must be one of {UNMEASURED}, got {status!r}")
    return {name: None for name in MEASUREMENT_FIELDS} | {"feature_set": feature_set, "label_set": label_set,
                                                          "status": status}


def json_value(v):
    """A row value as JSON can hold it: a non-finite float (no bootstrap, say) becomes None, a
    tuple a list."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return [json_value(x) for x in v]
    return v


@dataclass
class UsableInformationResult:
    """Usable information of one (feature set, label set) pair. Bits unless the name says nats."""

    feature_set: str
    label_set: str
    bits: float
    ci_low: float
    ci_high: float
    test_ce_nats: float
    entropy_bits: float
    l2: float
    num_classes: int
    val_ce_nats: dict[float, float]   # per penalty, of the probes the choice was made between
    converged: bool
    pointwise_bits: torch.Tensor = field(repr=False)
    unseen_test_rows: int = 0     # test rows of classes absent from the train split, left out
    warning: str | None = None    # why the result may be less trustworthy than its CI says
    status: str = "ok"            # "ok" or "not_converged"; unmeasured rows say why not (UNMEASURED)
    l2_grid: tuple[float, ...] = ()  # the penalties searched, the grid given widened where needed
    search: str = "full"          # "full": the whole grid; "local": the neighbours of the last choice
    probe_family: str = "linear"  # the read-out: "linear" (softmax) or "mlp" (one hidden layer)
    probe_hidden: int | None = None    # mlp: hidden units
    probe_restarts: int | None = None  # mlp: starts per (label set, penalty), the best on validation kept

    def row(self) -> dict:
        """The measurement as a row of :data:`MEASUREMENT_FIELDS`."""
        return {name: json_value(getattr(self, name)) for name in MEASUREMENT_FIELDS}


@dataclass
class UsableInformation:
    """Results for every (feature set, label set) pair, plus the probe fits for warm starts."""

    results: list[UsableInformationResult]
    fits: dict = field(repr=False)  # feature set -> ProbeFit
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: fit, polish, score
    # feature set -> whether the next measurement may search its choices' neighbours alone
    # (engine.grid.local_search_holds); empty: the whole grid
    local_holds: dict[str, bool] = field(default_factory=dict, repr=False)
    # feature set -> (label set index, penalty) of its finalists, which the next measurement polishes
    # in its fit's own op call (engine.scoring.finalist_keys); empty: none expected
    finalists: dict[str, list[tuple[int, float]]] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: tuple[str, str]) -> UsableInformationResult:
        for r in self.results:
            if (r.feature_set, r.label_set) == tuple(key):
                return r
        raise KeyError(f"no result for (feature set, label set) = {key!r}")

    def rows(self) -> list[dict]:
        return [r.row() for r in self.results]

    def __str__(self) -> str:
        lines = [f"{'features':<14}{'labels':<10}{'I_u (bits)':>11}{'95% CI (bits)':>18}{'H(Y) bits':>10}"
                 f"{'CE test bits':>13}{'l2':>10}"]
        for r in self.results:
            ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
            lines.append(f"{r.feature_set:<14}{r.label_set:<10}{r.bits:>11.3f}{ci:>18}{r.entropy_bits:>10.3f}"
                         f"{r.test_ce_nats / LN2:>13.3f}{r.l2:>10.1e}")
        return "\n".join(lines)
