"""What the probes of every family share: the rows they are fitted and scored on (standardised,
clipped to the fit rows' range), the checks of the features and labels a fit is asked about, and
when a fit counts as converged. :mod:`~uinfo_fast.engine.fit` (softmax probes) and
:mod:`~uinfo_fast.engine.mlp` (one-hidden-layer probes) both build on it."""
from __future__ import annotations

import torch

from .layout import CONVERGED_CODES, FitStatus
from .labels import fit_label_columns
from .validation import check_features

# How far above its tolerance a probe's gradient may sit when its objective went flat at the
# working precision (float32 rounding stops near-separable probes a little above tol).
FLAT_GRADIENT_FACTOR = 1e3


def check_fit_rows(fit, features, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels stacked [M, L] in ``fit``'s label-set order), validated for a fit of any
    probe family (its ``width``, ``device``, ``label_names``, ``num_classes`` and ``classes``)."""
    x = check_features(features, "features")
    if x.shape[1] != fit.width:
        raise ValueError(f"features has {x.shape[1]} columns but the probes were fitted on {fit.width}")
    if x.device != fit.device:
        raise ValueError(f"features is on {x.device} but the probes are on {fit.device}")
    return x, fit_label_columns(fit, labels, x)


def standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per feature in the compute dtype.

    A feature that is constant on the fit split (a dead ReLU unit, say) gets std = inf, so it
    standardises to 0 everywhere and the probes ignore it. Scaling it by a tiny std instead would
    turn the rare test example where the unit fires into a value of 1e6 standard deviations, and
    a probe that never saw it vary would answer with an arbitrarily confident logit.
    """
    xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    std = xf.std(0) if xf.shape[0] > 1 else torch.zeros(xf.shape[1], dtype=xf.dtype, device=xf.device)
    constant = std <= 1e-6 * float(std.max().clamp_min(1e-30))
    return xf.mean(0), std.masked_fill(constant, float("inf"))


def standardise(x: torch.Tensor, scaling: tuple[torch.Tensor, ...] | None, in_place: bool = False) -> torch.Tensor:
    """``x`` scaled by a :func:`standardisation` (in its dtype), or ``x`` itself for None: in one
    new tensor, or in ``x`` itself when ``in_place`` and the dtypes allow (a copy the caller owns).
    A scaling of four tensors (:func:`with_fit_range`) also clips every feature to the range it
    had on the fit rows."""
    if scaling is None:
        return x
    mean, std = scaling[:2]
    out = x if in_place and x.dtype == mean.dtype else x.to(mean.dtype, copy=True)
    out = out.sub_(mean).div_(std)
    return out.clamp_(scaling[2], scaling[3]) if len(scaling) == 4 else out


def with_fit_range(scaling: tuple[torch.Tensor, torch.Tensor], x_fit: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``scaling`` with the range [min, max] of every standardised feature on the fit rows
    ``x_fit``, to clip the rows a probe is scored on to.

    A unit that fires on a handful of fit rows has a small deviation there; on a test row where it
    fires harder, its standardised value lies far beyond anything the probe was fitted on, and a
    weakly penalised probe extrapolates its logit there into a confident error worth hundreds of
    bits (a shuffled-label control once read -0.96 bits from two such rows). A probe answers
    only within the range it has seen."""
    lo, hi = x_fit.amin(0).to(scaling[0].dtype), x_fit.amax(0).to(scaling[0].dtype)
    return (*scaling, lo, hi)


def converged_of(status: torch.Tensor, grad_max: torch.Tensor, tol: float) -> torch.Tensor:
    """[K] bool: the gradient reached tol, or the objective stopped moving at working precision
    with the gradient within :data:`FLAT_GRADIENT_FACTOR` times tol (a fit of any family). A flat
    objective with a large gradient is a stuck fit (features of 1e18, say, where every step
    overflows), not an optimum."""
    ended = torch.isin(status, torch.tensor(CONVERGED_CODES, device=status.device))
    return ended & ((status != int(FitStatus.FLAT)) | (grad_max <= FLAT_GRADIENT_FACTOR * tol))


def host_check_interval(check_every: int | None, device: torch.device) -> int:
    """Iterations between a fit's host checks: ``check_every``, or by default every one on CPU,
    where a check costs nothing, and every 10 on CUDA, where each is a synchronisation."""
    if check_every is not None:
        return check_every
    return 1 if device.type == "cpu" else 10


class ProbeSetMixin:
    """What a fit of either family answers about its probes, from its ``label_col``, ``l2``,
    ``label_sets`` (a :class:`~uinfo_fast.engine.labels.ClassSets`), ``status``, ``grad_max`` and
    ``tol``."""

    # what ``label_sets`` says, by the names the fits have always used
    label_names = property(lambda self: self.label_sets.names)
    num_classes = property(lambda self: self.label_sets.counts)
    classes = property(lambda self: self.label_sets.classes, doc="per label set, the original class value of "
                       "each probe column (None: class indices)")

    @property
    def n_probes(self) -> int:
        return len(self.label_col)

    @property
    def converged(self) -> torch.Tensor:
        """[K] bool: :func:`converged_of` its status, gradient and tolerance."""
        return converged_of(self.status, self.grad_max, self.tol)

    @property
    def statuses(self) -> list[FitStatus]:
        return [FitStatus(int(s)) for s in self.status.tolist()]

    def probes_of(self, label_index: int) -> list[int]:
        """The probes of label set ``label_names[label_index]``, in penalty order."""
        return [k for k in range(self.n_probes) if self.label_col[k] == label_index]

    def index(self, label_name: str, l2: float) -> int:
        """Index of the (first) probe for (label set, penalty)."""
        for k in range(self.n_probes):
            if self.label_names[self.label_col[k]] == label_name and self.l2[k] == l2:
                return k
        raise KeyError(f"no probe for label set {label_name!r} with l2={l2}")
