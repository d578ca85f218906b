"""One-hidden-layer probes, ``family="mlp"``: q(y | z) = softmax(relu(z W1 + b1) W2 + b2).

The linear probe reads what a softmax on the features can; a small network reads more where
the label is in the features but not linearly (docs/DESIGN.md, section 1). Every (feature set,
label set, penalty, restart) probe is fitted in one call of the ``fit_mlp_probes`` op, full batch
by L-BFGS to a gradient tolerance. The objective of a probe is its mean cross-entropy plus
``l2/2 (||W1||^2 + ||W2||^2)`` (biases not penalised): scikit-learn's ``MLPClassifier`` with
``alpha = l2 * N`` (it minimises mean cross-entropy + alpha / (2 N) times the squared weights).

Starting weights are drawn as ``MLPClassifier`` draws them (uniform, Glorot's bound for ReLU
units), on the host from a generator seeded by (seed, label set, restart), so one seed gives one
start on every device; the probes of one label set and restart start from the same weights at
every penalty, so that penalties differ only by the penalty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .extension import ops
from .labels import ClassSets, checked_label_sets
from .probe_rows import ProbeSetMixin, check_fit_rows, host_check_interval, standardise
from .params import Integer, NoneOr, Real, option, validate_fields
from .validation import check_features, check_l2

# Restarts are fitted side by side; a cold start draws each anew, a warm one continues each.
DEFAULT_HIDDEN = 64
DEFAULT_RESTARTS = 2
# A ReLU network's objective has kinks wherever a unit's input crosses 0 at a probe row; on the
# thousand rows of a probe set the gradient of a weakly penalised probe can stay at 1e-3 while the
# fit no longer moves. The fit then stops when the objective fell by under this, relative, over 20
# iterations: on a digit run's features, fits that had got there read the test set within 0.001
# bits of a fit of 1,500 iterations (bench/mlp_stopping.py, bench/RESULTS.md).
DEFAULT_FTOL = 1e-4


@dataclass(frozen=True)
class MlpFitOptions:
    """Width, restarts and L-BFGS limits of a fit of one-hidden-layer probes."""

    hidden: int = option(DEFAULT_HIDDEN, check=Integer(1), help="hidden units of every probe")
    restarts: int = option(DEFAULT_RESTARTS, check=Integer(1), help="starts per (label set, penalty), best kept")
    seed: int = option(0, check=Integer(), help="the starting weights")
    max_iter: int = option(1000, check=Integer(0), help="L-BFGS iterations per probe at most")
    tol: float = option(1e-4, check=Real(0.0, low_open=True), help="max |gradient| every probe is fitted to")
    ftol: float = option(DEFAULT_FTOL, check=Real(0.0, 1.0, high_open=True),
                         help="a probe whose objective fell by under this (relative) over its last 20 iterations "
                              "has converged (0: off)")
    history: int = option(10, check=Integer(1), help="L-BFGS history pairs")
    check_every: int | None = option(None, check=NoneOr(Integer(1)), help="iterations between host checks (none: 1 on CPU, 10 on CUDA)")

    def __post_init__(self):
        validate_fields(self)

    def check_every_on(self, device: torch.device) -> int:
        return host_check_interval(self.check_every, device)


@dataclass(frozen=True)
class MlpProbeFit(ProbeSetMixin):
    """K one-hidden-layer probes fitted on one feature matrix.

    Probe k predicts label set ``label_names[label_col[k]]`` with penalty ``l2[k]``, from start
    ``restart[k]``; its parameters are ``w1[k]`` [D, H], ``b1[k]`` [H], ``w2[k]`` [H, C] and
    ``b2[k]`` [C], of which it uses the first ``num_classes[label_col[k]]`` columns.
    ``label_sets`` and ``standardize`` are as in :class:`~uinfo_fast.engine.fit.ProbeFit`.
    ``all_restarts``: where the estimator kept the best restart of each penalty, the fit of every
    restart (the next measurement continues each of them).
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    label_col: list[int]
    l2: list[float]
    restart: list[int]
    label_sets: ClassSets
    objective: torch.Tensor  # [K] float64
    grad_max: torch.Tensor   # [K] float64
    n_iter: torch.Tensor     # [K] int64
    status: torch.Tensor     # [K] int64, FitStatus codes
    tol: float
    restarts: int
    standardize: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)
    all_restarts: MlpProbeFit | None = field(default=None, repr=False)

    family = "mlp"

    hidden = property(lambda self: self.w1.shape[2], doc="H, the hidden units")
    width = property(lambda self: self.w1.shape[1], doc="D, the features' width")
    device = property(lambda self: self.w1.device)

    def probe_classes(self) -> torch.Tensor:
        return torch.tensor([self.num_classes[j] for j in self.label_col], dtype=torch.int64, device=self.device)

    def validated_log_likelihood(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log q_k(y_i | x_i) [M, K] on validated features (unstandardised) and stacked labels."""
        dev = self.device
        return ops.mlp_probe_log_likelihood(standardise(x, self.standardize).to(self.w1.dtype), labels, self.w1,
                                            self.b1, self.w2, self.b2, torch.tensor(self.label_col, device=dev),
                                            self.probe_classes(), False)

    def log_likelihood(self, features: torch.Tensor, labels) -> torch.Tensor:
        """log q_k(y_i | x_i) in nats for every row i and probe k: [M, K]."""
        return self.validated_log_likelihood(*check_fit_rows(self, features, labels))

    def cross_entropy(self, features: torch.Tensor, labels) -> torch.Tensor:
        """Mean cross-entropy of every probe on (features, labels), nats: [K] float64."""
        return -self.log_likelihood(features, labels).to(torch.float64).mean(0)

    def select(self, keep: list[int]) -> MlpProbeFit:
        """The probes ``keep`` alone, in that order (this fit as their ``all_restarts``)."""
        idx = torch.tensor(keep, device=self.device)
        pick = (lambda t: t.index_select(0, idx))
        return replace(self, w1=pick(self.w1), b1=pick(self.b1), w2=pick(self.w2), b2=pick(self.b2),
                       label_col=[self.label_col[k] for k in keep], l2=[self.l2[k] for k in keep],
                       restart=[self.restart[k] for k in keep], objective=pick(self.objective),
                       grad_max=pick(self.grad_max), n_iter=pick(self.n_iter), status=pick(self.status),
                       all_restarts=self.all_restarts or self)


def mlp_layout(n_label_sets: int, l2_values: list[float], restarts: int) -> tuple[list[int], list[float], list[int]]:
    """(label column, penalty, restart) of every probe: label set, then penalty, then restart."""
    rows = [(j, l2, r) for j in range(n_label_sets) for l2 in l2_values for r in range(restarts)]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def initial_weights(width: int, counts: list[int], label_col: list[int], restart: list[int], hidden: int, seed: int,
                    dtype: torch.dtype, device) -> tuple[torch.Tensor, ...]:
    """(w1, b1, w2, b2) of every probe, drawn as ``MLPClassifier`` draws them: each layer uniform
    in +-sqrt(6 / (fan_in + fan_out)), biases too; one draw per (label set, restart), on the host."""
    c_max = max(counts)
    draws = {}
    for j, r in sorted(set(zip(label_col, restart))):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + j * 1009 + r)
        b1_bound, b2_bound = math.sqrt(6.0 / (width + hidden)), math.sqrt(6.0 / (hidden + counts[j]))
        w2, b2 = torch.zeros(hidden, c_max, dtype=torch.float64), torch.zeros(c_max, dtype=torch.float64)
        w1 = (torch.rand(width, hidden, generator=gen, dtype=torch.float64) * 2 - 1) * b1_bound
        b1 = (torch.rand(hidden, generator=gen, dtype=torch.float64) * 2 - 1) * b1_bound
        w2[:, :counts[j]] = (torch.rand(hidden, counts[j], generator=gen, dtype=torch.float64) * 2 - 1) * b2_bound
        b2[:counts[j]] = (torch.rand(counts[j], generator=gen, dtype=torch.float64) * 2 - 1) * b2_bound
        draws[j, r] = (w1, b1, w2, b2)
    stacked = [torch.stack([draws[j, r][i] for j, r in zip(label_col, restart)]) for i in range(4)]
    return tuple(t.to(dtype=dtype, device=device) for t in stacked)


def fit_mlp_sets(xs: dict[str, torch.Tensor], y_all: torch.Tensor, names: list[str], counts: list[int],
                 l2_values: list[float], options: MlpFitOptions, inits: dict | None = None,
                 standardize: dict | None = None, classes=None) -> dict[str, MlpProbeFit]:
    """Every (label set, penalty, restart) probe of every feature set, on validated arguments, in
    one op call: from ``inits[name]`` (a compatible :class:`MlpProbeFit`, see :func:`compatible`)
    where given, else from :func:`initial_weights`."""
    label_col, l2, restart = mlp_layout(len(names), l2_values, options.restarts)
    starts, sets = {}, list(xs)
    for name in sets:
        x, init = xs[name], (inits or {}).get(name)
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        starts[name] = ((init.w1, init.b1, init.w2, init.b2) if init is not None else
                        initial_weights(x.shape[1], counts, label_col, restart, options.hidden, options.seed, cdt,
                                        x.device))
        starts[name] = tuple(t.to(dtype=cdt, device=x.device) for t in starts[name])
    dev = xs[sets[0]].device
    col_t = torch.tensor(label_col, dtype=torch.int64, device=dev)
    cls_t = torch.tensor([counts[j] for j in label_col], dtype=torch.int64, device=dev)
    l2_t = torch.tensor(l2, dtype=torch.float64, device=dev)
    out = ops.fit_mlp_probes([xs[n] for n in sets], y_all, *[[starts[n][i] for n in sets] for i in range(4)],
                             [col_t] * len(sets), [cls_t] * len(sets), [l2_t] * len(sets), options.max_iter,
                             options.tol, options.history, options.check_every_on(dev), False, options.ftol)
    scaling = standardize or {}
    label_sets = ClassSets(names, counts, classes)
    return {n: MlpProbeFit(*(part[s] for part in out[:4]), label_col, l2, restart, label_sets,
                           *(part[s] for part in out[4:]), options.tol, options.restarts, scaling.get(n))
            for s, n in enumerate(sets)}


def compatible(init: MlpProbeFit | None, names: list[str], counts: list[int], l2_values: list[float],
               width: int, options: MlpFitOptions) -> bool:
    """Whether ``init`` holds the probes these arguments lay out (same label sets, classes,
    penalties, restarts, width and hidden units)."""
    if init is None:
        return False
    label_col, l2, restart = mlp_layout(len(names), l2_values, options.restarts)
    return (init.label_names == names and init.num_classes == counts and init.label_col == label_col
            and init.l2 == l2 and init.restart == restart and init.width == width and init.hidden == options.hidden)


def fit_mlp_probes(features: torch.Tensor, labels, l2=1e-3, *, hidden: int = DEFAULT_HIDDEN,
                   restarts: int = 1, seed: int = 0, num_classes=None, init: MlpProbeFit | None = None,
                   max_iter: int = 1000, tol: float = 1e-4, ftol: float = DEFAULT_FTOL, history: int = 10,
                   check_every: int | None = None) -> MlpProbeFit:
    """Fit one-hidden-layer probes for every (label set, penalty, restart) on ``features`` at once.

    Args:
        features: [N, D] float32, bfloat16, float16 or float64 (CPU or CUDA).
        labels: int64 class indices: a tensor [N], [N, L], a list of [N] tensors, or a mapping
            name -> [N] tensor (one entry per label set).
        l2: one penalty or a grid; the objective is mean cross-entropy + l2/2 (||W1||^2 +
            ||W2||^2), i.e. ``MLPClassifier(alpha=l2 * N)``.
        hidden: hidden units; restarts: starts per (label set, penalty), drawn from ``seed``.
        num_classes: an int or one per label set; default max label + 1.
        init: warm start from an earlier fit with the same label sets, penalties and restarts.
        max_iter, tol, ftol, history, check_every: L-BFGS stops a probe when max |gradient| <= tol,
            when its objective fell by under ftol (relative) over its last 20 iterations, or after
            max_iter iterations; host checks every check_every iterations (default 1 on CPU, 10
            on CUDA).
    """
    options = MlpFitOptions(hidden=hidden, restarts=restarts, seed=seed, max_iter=max_iter, tol=tol, ftol=ftol,
                            history=history, check_every=check_every)
    x = check_features(features, "features")
    names, counts, y_all = checked_label_sets(labels, num_classes, x)
    l2_values = check_l2(l2)
    if init is not None and not compatible(init, names, counts, l2_values, x.shape[1], options):
        raise ValueError("init was fitted with other label sets, class counts, penalties, restarts or widths")
    return fit_mlp_sets({"": x}, y_all, names, counts, l2_values, options, {"": init})[""]
