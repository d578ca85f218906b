"""Usable information I_u(Z; Y) = H(Y) - CE_test, from penalised softmax probes (DESIGN.md §1).

Per (feature set, label set): probes for every penalty of a grid are fitted at once on the train
split, the penalty with the lowest validation cross-entropy is chosen, and the chosen probe is
scored on the test split. The estimate runs in four steps, each a function below:
validate (the public boundary) -> fit -> select -> score.

H(Y) is estimated as the test cross-entropy of the best constant predictor, the add-one smoothed
label marginal of the train split. With equal train and test marginals this is the entropy
of the labels; in general it makes I_u the V-information gain of the probe over knowing only
the label frequencies, and makes the pointwise values average exactly to I_u. Nothing is
clamped: a useless representation can give a slightly negative I_u.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .fit import (SCHEDULES, FitOptions, ProbeFit, compatible_init, fit_validated, log_likelihood_of, polish,
                  standardisation, standardise)
from .inputs import Features, Labels, check_feature_splits, check_label_splits, validation_split
from .results import LN2, UsableInformation, UsableInformationResult
from .params import Boolean, Choice, Integer, NoneOr, Real, validate_params
from .validation import check_l2

# Penalties for standardised features: scikit-learn's default C = 1 is l2 = 1 / N, about 2e-5
# at N = 50,000; the grid spans four decades around and above it.
DEFAULT_L2_GRID = tuple(float(v) for v in torch.logspace(-5, -1, 8, dtype=torch.float64))
_OPEN_UNIT = Real(0.0, 1.0, low_open=True, high_open=True)
# Fewer train rows than this per class, on average, and a probe's test cross-entropy, hence I_u,
# is dominated by the classes it barely saw: the result carries a warning.
MIN_ROWS_PER_CLASS = 10
# Penalties whose validation cross-entropy lies within this of the lowest count as tied (the
# largest is chosen): far above the differences that stopping points make, far below the
# differences between neighbouring penalties of a grid.
TIE_NATS = 1e-3
# The finalists of each label set (the best few by validation cross-entropy after the grid fit)
# are fitted on to max |gradient| <= POLISH_TOL, in float64 where float32 stalls on a flat
# objective first (FitWork.refine), before the choice between them: neither the choice nor the
# chosen probe's usable information then depends on where the fit started, warm or cold
# (bench/bench_warm_cold.py).
FINALISTS = 2
POLISH_TOL = 3e-6


@dataclass(frozen=True)
class EstimatorOptions:
    """The estimator's options (see :func:`estimate_usable_information`), checked when made."""

    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    val_fraction: float = 0.2
    standardize: bool = True
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    max_iter: int = 1000
    tol: float = 1e-5
    schedule: str = "auto"
    polish_tol: float | None = POLISH_TOL  # finalists fitted on to this; None: choose as the grid fit left them

    _CONSTRAINTS = {"val_fraction": _OPEN_UNIT, "standardize": Boolean(), "n_bootstrap": Integer(0),
                    "confidence": _OPEN_UNIT, "seed": Integer(), "schedule": Choice(SCHEDULES),
                    "polish_tol": NoneOr(Real(0.0, low_open=True))}

    def __post_init__(self):
        object.__setattr__(self, "l2_grid", tuple(check_l2(self.l2_grid, "l2_grid")))
        validate_params(self, self._CONSTRAINTS)
        self.fit  # noqa: B018  (max_iter and tol are checked by FitOptions)

    @property
    def fit(self) -> FitOptions:
        return FitOptions(max_iter=self.max_iter, tol=self.tol, schedule=self.schedule)

    @property
    def finalist_fit(self) -> FitOptions | None:
        """How far the finalists are fitted before the choice between them (see :data:`FINALISTS`)."""
        if self.polish_tol is None:
            return None
        return FitOptions(max_iter=self.max_iter, tol=min(self.tol, self.polish_tol), schedule=self.schedule)


# ---------------------------------------------------------------------------------------------
# fit, select, score


def fit_feature_set(x: torch.Tensor, labels: Labels, options: EstimatorOptions, warm: ProbeFit | None,
                    owned: bool = False) -> tuple[ProbeFit, torch.Tensor]:
    """Every (label set, penalty) probe of one feature set, on its train rows (standardised
    there, in place when ``owned``: a copy nobody else holds), warm-started from ``warm`` when
    its layout fits; and the features it was fitted on."""
    scaling = standardisation(x) if options.standardize else None
    x_fit = standardise(x, scaling, in_place=owned).to(x.dtype) if scaling is not None else x
    names, counts = labels.names, [labels.num_classes[n] for n in labels.names]
    grid = list(options.l2_grid)
    init = warm if (warm is not None and warm.label_names == names and
                    compatible_init(warm, counts, grid, x.shape[1])) else None
    fit = fit_validated(x_fit, labels.stacked("train"), names, counts, grid, init, options.fit, scaling,
                        classes=[labels.classes[n] for n in names])
    return fit, x_fit


def mean_nll(ll: torch.Tensor, fit: ProbeFit, seen: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Mean negative log-likelihood [K] of every probe over the rows whose class its label set has."""
    mask = torch.stack([seen[names[j]] for j in fit.label_col], 1).to(ll.dtype)  # [rows, K]
    return -(ll * mask).sum(0) / mask.sum(0)


def validation_ce(fit: ProbeFit, x_val: torch.Tensor, labels: Labels) -> torch.Tensor:
    """[K] float64: every probe's mean cross-entropy on the validation rows of classes it knows."""
    val_ll = log_likelihood_of(fit, x_val, labels.stacked("val")).to(torch.float64)
    return mean_nll(val_ll, fit, labels.val_seen, labels.names)


def finalists_of(fit: ProbeFit, val_ce: torch.Tensor, label_index: int) -> list[int]:
    """The :data:`FINALISTS` probes of a label set with the lowest validation cross-entropy as
    the grid fit left them: polished, they decide the choice between them."""
    return sorted(fit.probes_of(label_index), key=lambda k: float(val_ce[k]))[:FINALISTS]


def select_penalty(fit: ProbeFit, val_ce: torch.Tensor, label_index: int) -> int:
    """The probe of label set ``label_index`` with the lowest validation cross-entropy; penalties
    within :data:`TIE_NATS` of it count as tied, and the largest of those (the simplest probe)
    is chosen, so that fits that differ only by their stopping point choose alike."""
    probes = fit.probes_of(label_index)
    best = min(float(val_ce[k]) for k in probes)
    return max((k for k in probes if float(val_ce[k]) <= best + TIE_NATS), key=lambda k: fit.l2[k])


def log_baseline(labels: Labels, name: str) -> torch.Tensor:
    """log of the baseline predictor of label set ``name``: its train marginal with one
    pseudo-count per class that occurs there (absent classes have no share), [K] float64."""
    prior = torch.bincount(labels.train[name], minlength=labels.num_classes[name]).to(torch.float64) + 1.0
    return (prior / prior.sum()).log()


def score(fit: ProbeFit, best: int, j: int, name: str, test_ll: torch.Tensor, val_ce: torch.Tensor,
          labels: Labels, options: EstimatorOptions) -> UsableInformationResult:
    """I_u of the chosen probe ``best`` of label set ``j`` (called ``name``) on the test rows of
    classes that occur in the train split: the mean of the pointwise gains over the baseline,
    with its bootstrap CI."""
    label = labels.names[j]
    seen = labels.test_seen[label]
    log_prior = log_baseline(labels, label).to(test_ll.device)
    y_test, ll = labels.test[label][seen], test_ll[seen, best]
    pointwise = (ll - log_prior[y_test]) / LN2
    ci = bootstrap(pointwise, options.n_bootstrap, options.confidence, options.seed)
    unseen = int(seen.numel() - seen.sum())
    return UsableInformationResult(
        feature_set=name, label_set=label, bits=float(pointwise.mean()), ci_low=ci[0], ci_high=ci[1],
        test_ce_nats=float(-ll.mean()), entropy_bits=float(-log_prior[y_test].mean()) / LN2,
        l2=fit.l2[best], num_classes=labels.num_classes[label],
        val_ce_nats={fit.l2[k]: float(val_ce[k]) for k in fit.probes_of(j)},
        converged=bool(fit.converged[best]), pointwise_bits=pointwise.cpu(), unseen_test_rows=unseen,
        warning=probe_set_warning(labels.train[label].numel(), labels.num_classes[label], unseen))


def probe_set_warning(n_train: int, n_classes: int, unseen: int) -> str | None:
    """What makes a result less trustworthy than its CI says, or None: few train rows per class
    (under :data:`MIN_ROWS_PER_CLASS` on average bias I_u low), test rows left out."""
    notes = []
    if n_train < MIN_ROWS_PER_CLASS * n_classes:
        notes.append(f"{n_train / n_classes:.1f} train rows per class, under {MIN_ROWS_PER_CLASS}: I_u is biased low")
    if unseen:
        notes.append(f"{unseen} test rows of classes absent from the train split left out")
    return "; ".join(notes) or None


def bootstrap(pointwise: torch.Tensor, n_bootstrap: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over examples; (nan, nan) without resamples."""
    if n_bootstrap <= 0:
        return float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    values = pointwise.to("cpu", torch.float64)
    means = []
    for start in range(0, n_bootstrap, 64):  # bounded memory: 64 resamples at a time
        b = min(64, n_bootstrap - start)
        idx = torch.randint(0, values.numel(), (b, values.numel()), generator=gen)
        means.append(values[idx].mean(1))
    alpha = (1.0 - confidence) / 2.0
    q = torch.quantile(torch.cat(means), torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


def measure_feature_set(name: str, features: Features, labels: Labels, options: EstimatorOptions,
                        warm: ProbeFit | None) -> tuple[ProbeFit, list[UsableInformationResult]]:
    """fit -> select -> score for one feature set."""
    x = features.train[name]
    if labels.carve is not None:
        x_train, x_val = x.index_select(0, labels.carve[0]), x.index_select(0, labels.carve[1])
    else:
        x_train, x_val = x, features.val[name]
    fit, x_fit = fit_feature_set(x_train, labels, options, warm, owned=labels.carve is not None)
    val_ce = validation_ce(fit, x_val, labels)
    if options.finalist_fit is not None:
        finalists = [k for j in range(len(labels.names)) for k in finalists_of(fit, val_ce, j)]
        fit = polish(fit, x_fit, labels.stacked("train"), finalists, options.finalist_fit)
        val_ce = validation_ce(fit, x_val, labels)
    chosen = [select_penalty(fit, val_ce, j) for j in range(len(labels.names))]
    test_ll = log_likelihood_of(fit, features.test[name], labels.stacked("test")).to(torch.float64)
    results = [score(fit, k, j, name, test_ll, val_ce, labels, options) for j, k in enumerate(chosen)]
    return fit, results


def estimate(features: Features, labels: Labels, options: EstimatorOptions,
             warm_start: UsableInformation | None = None, progress: bool = False) -> UsableInformation:
    """Usable information of every feature set about every label set, on validated inputs."""
    t0 = time.perf_counter()
    results, fits = [], {}
    bar = tqdm(list(features.train), desc="usable information", unit="feature set", disable=not progress)
    for name in bar:
        warm = warm_start.fits.get(name) if warm_start is not None else None
        fits[name], new = measure_feature_set(name, features, labels, options, warm)
        results += new
        bar.set_postfix_str(f"{name}/{new[-1].label_set}: {new[-1].bits:.3f} bits")
    return UsableInformation(results, fits, time.perf_counter() - t0)


def estimate_usable_information(
    features,
    labels,
    test_features,
    test_labels,
    *,
    l2_grid=DEFAULT_L2_GRID,
    num_classes=None,
    val_fraction: float = 0.2,
    standardize: bool = True,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    warm_start: UsableInformation | None = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
    schedule: str = "auto",
    progress: bool = False,
    val_features=None,
    val_labels=None,
) -> UsableInformation:
    """Usable information, in bits, of every feature set about every label set.

    Args:
        features: train features, a tensor [N, D] or a mapping name -> [N, D_name] (e.g. layers).
        labels: train labels, a tensor [N] or a mapping name -> [N] int64 (e.g. coarse, fine).
        test_features, test_labels: the same for the disjoint test set (same names).
        l2_grid: penalties to choose from, per (feature set, label set), by validation CE.
        num_classes: None (max label + 1 over train and test), an int, or a mapping per label set.
        val_fraction: share of the train rows held out to choose the penalty.
        standardize: scale every feature to zero mean, unit variance on the fit split first.
        n_bootstrap, confidence: bootstrap confidence interval over test examples.
        seed: the train/validation split and the bootstrap.
        warm_start: an earlier result for the same names (e.g. the previous checkpoint).
        max_iter, tol: L-BFGS limits per probe (see :func:`fit_probes`).
        schedule: how the penalties of a feature set are fitted (see :func:`fit_probes`).
        progress: show a progress bar over the feature sets.
        val_features, val_labels: an explicit validation set (same names) to choose the penalty
            on, instead of carving ``val_fraction`` out of the train rows; the probes then fit on
            every train row. Use it when the train features come from examples the network was
            trained on: a network that memorised them makes a carved-out validation split as
            separable as the fit split, and the penalty it picks overfits.
    """
    options = EstimatorOptions(l2_grid=l2_grid, val_fraction=val_fraction, standardize=standardize,
                               n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, max_iter=max_iter, tol=tol,
                               schedule=schedule)
    if (val_features is None) != (val_labels is None):
        raise ValueError("val_features and val_labels go together: give both or neither")
    feats = check_feature_splits(features, test_features, val_features)
    first = {split: next(iter(sets.values())) for split, sets in
             (("train", feats.train), ("test", feats.test), ("val", feats.val)) if sets}
    rows = {split: x.shape[0] for split, x in first.items()}
    device = first["train"].device
    labs = check_label_splits(labels, test_labels, val_labels, num_classes, rows, device, val_fraction, seed)
    result = estimate(feats, labs, options, warm_start, progress)
    for r in result.results:
        if r.warning:
            warnings.warn(f"usable information of {r.feature_set}/{r.label_set}: {r.warning}", stacklevel=2)
    return result
