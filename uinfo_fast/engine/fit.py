"""Batched fitting of L2-penalised softmax probes through the ``fit_probes`` op.

:func:`fit_probes` is the public entry: it validates its arguments once and hands them to
:func:`fit_validated`, which the estimator calls directly on inputs it has validated itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .labels import ClassSets, checked_label_sets
from .layout import FitStatus, ProbeLayout, probe_layout
from .extension import ops
from .path import FitWork, fit_grid, run
from .params import Choice, Integer, NoneOr, Real, check_param, option, validate_fields
from .probe_rows import ProbeSetMixin, check_fit_rows, host_check_interval, standardise
from .validation import check_features, check_l2

SCHEDULES = ("auto", "batched", "path")


@dataclass(frozen=True)
class FitOptions:
    """L-BFGS limits and the penalty schedule of a fit (see :func:`fit_probes`)."""

    max_iter: int = option(1000, check=Integer(0), help="L-BFGS iterations per probe at most")
    tol: float = option(1e-5, check=Real(0.0, low_open=True), help="max |gradient| every probe is fitted to")
    history: int = option(10, check=Integer(1), help="L-BFGS history pairs")
    check_every: int | None = option(None, check=NoneOr(Integer(1)),
                                     help="iterations between host checks (none: 1 on the CPU, 10 on CUDA)")
    schedule: str = option("auto", check=Choice(SCHEDULES), help="batched, path or auto")
    l2_tol: float | None = option(None, check=NoneOr(Real(0.0, low_open=True)),
                                  help="also max |gradient| <= this x penalty (see the fit_probes op)")

    def __post_init__(self):
        validate_fields(self)

    def tolerance(self, l2: torch.Tensor) -> torch.Tensor:
        """Each probe's gradient tolerance for penalties ``l2``, as the op computes it."""
        tol = torch.full_like(l2, self.tol)
        if self.l2_tol is None:
            return tol
        return torch.where(l2 > 0, torch.minimum(tol, l2 * self.l2_tol), tol)

    def check_every_on(self, device: torch.device) -> int:
        return host_check_interval(self.check_every, device)


@dataclass(frozen=True)
class ProbeFit(ProbeSetMixin):
    """K softmax probes fitted on one feature matrix, laid side by side as columns.

    Probe k predicts label set ``label_names[label_col[k]]`` with penalty ``l2[k]`` and owns
    columns ``offsets[k]:offsets[k+1]`` of ``weight`` [D, C] and ``bias`` [C]: the ``layout``,
    the one the op fitted them in. ``label_sets`` names the label sets, their class counts and
    (fits made by the estimator) the original class value of each probe column: labels given to
    :meth:`log_likelihood` are then original values, renumbered the same way.
    ``standardize`` is the (mean, std) the features were scaled with before the fit, applied
    again to the features given to :meth:`log_likelihood`, or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    layout: ProbeLayout
    label_sets: ClassSets
    objective: torch.Tensor  # [K] float64: mean NLL + l2/2 ||W||^2, nats
    grad_max: torch.Tensor  # [K] float64: max |gradient| at the end
    n_iter: torch.Tensor  # [K] int64: L-BFGS iterations per probe
    status: torch.Tensor  # [K] int64: FitStatus codes
    tol: float
    standardize: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)

    # the layout's three lists, as the probe sets of both families name them (ProbeSetMixin)
    offsets = property(lambda self: self.layout.offsets)
    label_col = property(lambda self: self.layout.label_col)
    l2 = property(lambda self: self.layout.l2)

    width = property(lambda self: self.weight.shape[0], doc="D, the features' width")
    device = property(lambda self: self.weight.device)

    def validated_log_likelihood(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log q_k(y_i | x_i) [M, K] on validated features (unstandardised) and stacked labels."""
        return probe_log_likelihood(standardise(x, self.standardize), labels, self.weight, self.bias, self.offsets,
                                    self.label_col, check_inputs=False)

    def probe(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [D, C_k], bias [C_k]) of probe k."""
        lo, hi = self.offsets[k], self.offsets[k + 1]
        return self.weight[:, lo:hi], self.bias[lo:hi]

    def log_likelihood(self, features: torch.Tensor, labels) -> torch.Tensor:
        """log q_k(y_i | x_i) in nats for every row i and probe k: [M, K]."""
        return log_likelihood_of(self, *check_fit_rows(self, features, labels))

    def cross_entropy(self, features: torch.Tensor, labels) -> torch.Tensor:
        """Mean cross-entropy of every probe on (features, labels), nats: [K] float64."""
        return -self.log_likelihood(features, labels).to(torch.float64).mean(0)

def log_likelihood_of(fit, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The log-likelihoods [M, K] of a fit of any probe family (:class:`ProbeFit`,
    :class:`~uinfo_fast.engine.mlp.MlpProbeFit`) on validated features and stacked labels [M, L]."""
    return fit.validated_log_likelihood(x, labels)


def sklearn_C(l2: float, n_rows: int, num_classes: int) -> float:
    """scikit-learn's ``LogisticRegression(C=...)`` that fits the same probe as penalty ``l2``.

    C = 1 / (l2 * N) for three or more classes. With two classes scikit-learn fits one weight
    vector w (binomial loss) where the softmax probe has two columns W = [-w/2, w/2] at the
    optimum, whose penalty l2/2 ||W||^2 = l2/4 ||w||^2 is half of sklearn's: C = 2 / (l2 * N).
    """
    return (2.0 if num_classes == 2 else 1.0) / (l2 * n_rows)


def probe_log_likelihood(x, labels, weight, bias, offsets, label_col, *, check_inputs: bool = True) -> torch.Tensor:
    """Raw op access: log-likelihoods [N, K] for probes laid out as in :class:`ProbeFit`. The op
    checks that labels lie in range and x is finite unless ``check_inputs`` is False."""
    dev = x.device
    return ops.probe_log_likelihood(x, labels, weight, bias, torch.tensor(offsets, dtype=torch.int64, device=dev),
                                    torch.tensor(label_col, dtype=torch.int64, device=dev), check_inputs)


def fit_probes(
    features: torch.Tensor,
    labels,
    l2=1e-4,
    *,
    num_classes=None,
    init: ProbeFit | None = None,
    schedule: str = "auto",
    max_iter: int = 1000,
    tol: float = 1e-5,
    history: int = 10,
    check_every: int | None = None,
    family: str = "linear",
    hidden: int = 64,
    restarts: int = 1,
    seed: int = 0,
):
    """Fit one softmax probe per (label set, penalty) pair on ``features``, all at once (or, with
    ``family="mlp"``, one-hidden-layer probes: :func:`~uinfo_fast.engine.mlp.fit_mlp_probes`).

    Args:
        features: [N, D] float32, bfloat16, float16 or float64 (CPU or CUDA). Arithmetic is
            float32, float64 for float64 features.
        labels: int64 class indices: a tensor [N], [N, L], a list of [N] tensors, or a mapping
            name -> [N] tensor (one entry per label set).
        l2: one penalty or a grid; the objective is mean cross-entropy + l2/2 ||W||^2 (bias not
            penalised), i.e. scikit-learn's LogisticRegression with C = 1 / (l2 * N).
        num_classes: an int, one per label set (a sequence, or a mapping by name); default:
            max label + 1.
        init: warm start from an earlier fit with the same label sets and penalties.
        schedule: "batched" fits every probe in one L-BFGS run; "path" fits the penalties from the
            largest down, each warm-started from a secant prediction off the last two (fewer
            passes when starting cold); "auto" takes "path" from a cold start and "batched" from a
            warm one.
        max_iter, tol: L-BFGS stops a probe when max |gradient| <= tol or after max_iter iterations.
        history: L-BFGS memory; check_every: iterations between host checks (early stop, dropping
            finished probes from the pass). Default: every iteration on CPU, every 10 on CUDA.
        family: "linear" (a :class:`ProbeFit`) or "mlp" (an ``MlpProbeFit`` of ``hidden`` units,
            ``restarts`` starts per (label set, penalty) drawn from ``seed``; ``schedule`` does
            not apply).
    """
    check_param("family", family, Choice(("linear", "mlp")))
    if family == "mlp":
        from .mlp import fit_mlp_probes

        return fit_mlp_probes(features, labels, l2, hidden=hidden, restarts=restarts, seed=seed,
                              num_classes=num_classes, init=init, max_iter=max_iter, tol=tol, history=history,
                              check_every=check_every)
    options = FitOptions(max_iter=max_iter, tol=tol, history=history, check_every=check_every, schedule=schedule)
    x = check_features(features, "features")
    names, counts, y_all = checked_label_sets(labels, num_classes, x)
    l2_values = check_l2(l2)
    if init is not None and not compatible_init(init, counts, l2_values, x.shape[1]):
        raise ValueError("init was fitted with other label sets, class counts, penalties or feature width")
    return fit_validated(x, y_all, names, counts, l2_values, init, options)


def compatible_init(init: ProbeFit, counts: list[int], l2_values: list[float], width: int) -> bool:
    """Whether ``init`` has the layout these label sets and penalties give, on ``width`` features."""
    layout = probe_layout(counts, l2_values)
    return init.offsets == layout.offsets and init.label_col == layout.label_col and init.weight.shape[0] == width


def regridded(fit: ProbeFit, l2_values: list[float]) -> ProbeFit:
    """``fit`` laid out on the penalties ``l2_values``: a probe whose penalty ``fit`` has keeps
    its parameters and outcome; a new one starts from its label set's probe of the nearest
    penalty (in log scale) and is marked unfitted (status MAX_ITER, no iterations). ``fit``
    itself when it is laid out on them already."""
    layout = probe_layout(fit.num_classes, l2_values)
    if layout.l2 == fit.l2:
        return fit
    dev = fit.weight.device
    source, fresh = [], []
    for k_new in range(layout.n_probes):
        j, l2 = layout.label_col[k_new], layout.l2[k_new]
        own = fit.probes_of(j)
        k = min(own, key=lambda i: abs(math.log(max(fit.l2[i], 1e-300)) - math.log(max(l2, 1e-300))))
        source.append(k)
        fresh.append(fit.l2[k] != l2)
    cols = torch.cat([torch.arange(fit.offsets[k], fit.offsets[k + 1]) for k in source]).to(dev)
    idx, new = torch.tensor(source, device=dev), torch.tensor(fresh, device=dev)
    return replace(fit, weight=fit.weight.index_select(1, cols), bias=fit.bias.index_select(0, cols), layout=layout,
                   objective=fit.objective[idx].masked_fill(new, float("inf")),
                   grad_max=fit.grad_max[idx].masked_fill(new, float("inf")),
                   n_iter=fit.n_iter[idx].masked_fill(new, 0),
                   status=fit.status[idx].masked_fill(new, int(FitStatus.MAX_ITER)))


def overlaid(base: ProbeFit, part: ProbeFit) -> tuple[ProbeFit, list[int]]:
    """``base`` with every probe that ``part`` (the same label sets on fewer penalties) also holds
    taken from ``part``, and the indices of the others: the probes still to fit."""
    where = {(part.label_col[k], part.l2[k]): k for k in range(part.n_probes)}
    shift, cols, probes, rest = base.weight.shape[1], [], [], []
    for k in range(base.n_probes):
        src = where.get((base.label_col[k], base.l2[k]))
        if src is None:
            rest.append(k)
            cols.append(torch.arange(base.offsets[k], base.offsets[k + 1]))
        else:
            cols.append(torch.arange(part.offsets[src], part.offsets[src + 1]) + shift)
        probes.append(k if src is None else base.n_probes + src)
    dev = base.device
    cols, probes = torch.cat(cols).to(dev), torch.tensor(probes, device=dev)
    both = {f: torch.cat([getattr(base, f), getattr(part, f).to(dev)]) for f in ("objective", "grad_max", "n_iter",
                                                                              "status")}
    return replace(base, weight=torch.cat([base.weight, part.weight.to(dev)], 1).index_select(1, cols),
                   bias=torch.cat([base.bias, part.bias.to(dev)]).index_select(0, cols),
                   **{f: v.index_select(0, probes) for f, v in both.items()}), rest


def fit_further(fits: dict[str, ProbeFit], xs: dict[str, torch.Tensor], y_all: torch.Tensor,
                probes: dict[str, list[int]], options: FitOptions, dtype: torch.dtype | None = None,
                polish: dict[str, list[int]] | None = None, polish_l2_tol: float | None = None
                ) -> dict[str, ProbeFit]:
    """``fits`` with ``probes[name]`` fitted on from where they stand, in one op call for every
    feature set, on the features (``xs``) and labels they were fitted on (``dtype``: the
    arithmetic, default the fits' own); then, in the same call, ``polish[name]`` (some of those
    probes) fitted on in float64 to max |gradient| <= min(tol, ``polish_l2_tol`` x penalty)."""
    names = list(fits)
    works = [FitWork.of(fits[n], xs[n]) for n in names]
    polish = polish or {}
    run(works, [probes.get(n, []) for n in names], y_all, options, dtype=dtype,
        polish=[polish.get(n, []) for n in names], polish_l2_tol=polish_l2_tol)
    return {n: replace(fits[n], weight=w.weight, bias=w.bias, objective=w.objective, grad_max=w.grad_max,
                       n_iter=w.n_iter, status=w.status) for n, w in zip(names, works)}


def polish(fits: dict[str, ProbeFit], xs: dict[str, torch.Tensor], y_all: torch.Tensor,
           probes: dict[str, list[int]], options: FitOptions) -> dict[str, ProbeFit]:
    """``fits`` with ``probes[name]`` fitted further, to ``options.tol``, in float64 and in one
    op call for every feature set, on the features (``xs``) and labels they were fitted on.

    Near the optimum of a near-separable probe (small penalty, few rows per class) float32
    rounding of the logits makes the objective noisy at about 1e-6 relative: a float32 line search
    stops on a flat objective while the weights can still be far along a valley of low curvature,
    far enough to move the test cross-entropy by hundredths of a bit, and to stop warm and cold
    fits of the same features at different points. Float64 has no such floor; the features are
    widened a row chunk at a time, never copied whole.
    """
    return fit_further(fits, xs, y_all, probes, options, dtype=torch.float64)


def fit_validated(x, y_all, names, counts, l2_values, init, options: FitOptions,
                  standardize=None, classes=None) -> ProbeFit:
    """fit_probes on validated arguments (``init`` compatible or None): one feature set of
    :func:`fit_feature_sets`."""
    return fit_feature_sets({"": x}, y_all, names, counts, l2_values, {"": init}, options,
                            {"": standardize}, classes)[""]


def fit_feature_sets(xs: dict[str, torch.Tensor], y_all, names, counts, l2_values, inits: dict, options: FitOptions,
                     standardize: dict | None = None, classes=None) -> dict[str, ProbeFit]:
    """Every (label set, penalty) probe of every feature set, on validated arguments, in as few
    op calls as the schedule allows: one from warm starts (``inits[name]``, compatible or None),
    one per penalty on the path from a cold start. ``standardize[name]`` and ``classes`` are
    recorded in the results for scoring."""
    layout = probe_layout(counts, l2_values)
    works = [FitWork.start(x, layout, inits.get(n)) for n, x in xs.items()]
    auto = [inits.get(n) is None for n in xs]
    on_path = auto if options.schedule == "auto" else [options.schedule == "path"] * len(xs)
    fit_grid(works, on_path, y_all, options)
    scaling = standardize or {}
    label_sets = ClassSets(names, counts, classes)
    return {n: ProbeFit(w.weight, w.bias, layout, label_sets, w.objective, w.grad_max, w.n_iter, w.status, options.tol,
                        scaling.get(n))
            for n, w in zip(xs, works)}
