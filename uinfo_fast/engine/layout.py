"""How the probes of one fit sit side by side, and how each one ended.

Probe k predicts label set ``label_col[k]`` with penalty ``l2[k]`` and owns columns
``offsets[k]:offsets[k+1]`` of one weight matrix [D, C] and bias [C], so one matrix product
serves every probe. :func:`probe_layout` is the one rule for that order: label set major,
penalty minor, ``k = j * len(l2_values) + i``.
"""
from __future__ import annotations

import enum
from typing import NamedTuple

import torch


class FitStatus(enum.IntEnum):
    """How the fit of one probe ended (the ``status`` the ``fit_probes`` op returns)."""

    MAX_ITER = 0            # stopped at max_iter
    GRADIENT = 1            # max |gradient| <= tol: converged
    FLAT = 2                # objective flat at the working precision: converged when the gradient
                            # is within probe_rows.FLAT_GRADIENT_FACTOR of tol (ProbeFit.converged)
    LINE_SEARCH_FAILED = 3  # 25 rejected steps running
    SLOW = 4                # one-hidden-layer probes: the objective fell by under ftol (relative) over
                            # the last 20 iterations: converged (engine/mlp.py, MlpFitOptions.ftol)

    @property
    def converged(self) -> bool:
        return self in (FitStatus.GRADIENT, FitStatus.FLAT, FitStatus.SLOW)


CONVERGED_CODES = tuple(int(s) for s in FitStatus if s.converged)


class ProbeLayout(NamedTuple):
    """The probes of a fit: column ``offsets`` [K+1], ``label_col`` [K] and ``l2`` [K]."""

    offsets: list[int]
    label_col: list[int]
    l2: list[float]

    @property
    def n_probes(self) -> int:
        return len(self.label_col)

    def columns(self, k: int) -> slice:
        return slice(self.offsets[k], self.offsets[k + 1])


def probe_layout(class_counts, l2_values) -> ProbeLayout:
    """The probes ``fit_probes`` lays out for these label sets and penalties."""
    label_col = [j for j in range(len(class_counts)) for _ in l2_values]
    l2_per_probe = [float(v) for _ in class_counts for v in l2_values]
    offsets = [0]
    for j in label_col:
        offsets.append(offsets[-1] + class_counts[j])
    return ProbeLayout(offsets, label_col, l2_per_probe)


def meta(values, device) -> torch.Tensor:
    """An int64 tensor of layout metadata on ``device`` (the ops' offsets and label columns)."""
    return torch.tensor(values, dtype=torch.int64, device=device)
