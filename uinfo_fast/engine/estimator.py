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

from .fit import (SCHEDULES, FitOptions, ProbeFit, compatible_init, fit_feature_sets, polish, standardisation,
                  standardise)
from .inputs import Features, Labels, check_feature_splits, check_label_splits
from .results import UsableInformation
from .scoring import score_all, unfinished_finalists, validation_ce
from .params import Boolean, Choice, Integer, NoneOr, Real, validate_params
from .validation import check_l2

# Penalties for standardised features: scikit-learn's default C = 1 is l2 = 1 / N, about 2e-5
# at N = 50,000; the grid spans four decades around and above it.
DEFAULT_L2_GRID = tuple(float(v) for v in torch.logspace(-5, -1, 8, dtype=torch.float64))
_OPEN_UNIT = Real(0.0, 1.0, low_open=True, high_open=True)
# The finalists of each label set (the best few by validation cross-entropy after the grid fit)
# are fitted on in float64 (fit.polish) until max |gradient| <= min(tol, POLISH_L2_TOL * l2)
# before the choice between them. A probe's weights sit about |gradient| / l2 from their optimum
# along its flattest directions, so small penalties need small gradients; float32 rounding
# flattens a near-separable probe's objective first. Neither the choice nor the chosen probe's
# usable information then depends on where the fit started, warm or cold
# (bench/bench_warm_cold.py).
FINALISTS = 2
POLISH_L2_TOL = 0.1


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
    polish_l2_tol: float | None = POLISH_L2_TOL  # None: choose between the probes as the grid fit left them

    _CONSTRAINTS = {"val_fraction": _OPEN_UNIT, "standardize": Boolean(), "n_bootstrap": Integer(0),
                    "confidence": _OPEN_UNIT, "seed": Integer(), "schedule": Choice(SCHEDULES),
                    "polish_l2_tol": NoneOr(Real(0.0, low_open=True))}

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
        if self.polish_l2_tol is None:
            return None
        return FitOptions(max_iter=self.max_iter, tol=self.tol, schedule=self.schedule, l2_tol=self.polish_l2_tol)


# ---------------------------------------------------------------------------------------------
# fit, select, score


@dataclass(frozen=True)
class SetRows:
    """One feature set's rows as the fit and the scoring use them."""

    x_fit: torch.Tensor   # the train rows, standardised
    x_val: torch.Tensor
    x_test: torch.Tensor
    scaling: tuple[torch.Tensor, torch.Tensor] | None


def set_rows(name: str, features: Features, labels: Labels, options: EstimatorOptions) -> SetRows:
    """The fit, validation and test rows of feature set ``name``; the train rows standardised on
    themselves (in place when they are a carved copy nobody else holds)."""
    x = features.train[name]
    if labels.carve is not None:
        x_train, x_val = x.index_select(0, labels.carve[0]), x.index_select(0, labels.carve[1])
    else:
        x_train, x_val = x, features.val[name]
    scaling = standardisation(x_train) if options.standardize else None
    owned = labels.carve is not None
    x_fit = standardise(x_train, scaling, in_place=owned).to(x.dtype) if scaling is not None else x_train
    return SetRows(x_fit, x_val, features.test[name], scaling)


def warm_inits(warm_start: UsableInformation | None, rows: dict[str, SetRows], labels: Labels,
               options: EstimatorOptions) -> dict[str, ProbeFit | None]:
    """The earlier fit of each feature set where its layout still fits, else None (a cold start)."""
    counts, grid = [labels.num_classes[n] for n in labels.names], list(options.l2_grid)
    inits = {}
    for name, r in rows.items():
        warm = warm_start.fits.get(name) if warm_start is not None else None
        ok = warm is not None and warm.label_names == labels.names and compatible_init(warm, counts, grid,
                                                                                        r.x_fit.shape[1])
        inits[name] = warm if ok else None
    return inits


def fit_all(rows: dict[str, SetRows], labels: Labels, options: EstimatorOptions,
            warm_start: UsableInformation | None) -> dict[str, ProbeFit]:
    """Every (feature set, label set, penalty) probe, in one op call from warm starts (one per
    penalty from a cold start)."""
    names = labels.names
    return fit_feature_sets({n: r.x_fit for n, r in rows.items()}, labels.stacked("train"), names,
                            [labels.num_classes[n] for n in names], list(options.l2_grid),
                            warm_inits(warm_start, rows, labels, options), options.fit,
                            {n: r.scaling for n, r in rows.items()}, [labels.classes[n] for n in names])


def estimate(features: Features, labels: Labels, options: EstimatorOptions,
             warm_start: UsableInformation | None = None, progress: bool = False) -> UsableInformation:
    """Usable information of every feature set about every label set, on validated inputs:
    fit every probe, polish the finalists, choose, score."""
    clock = _Phases(progress)
    rows = {n: set_rows(n, features, labels, options) for n in features.train}
    fits = fit_all(rows, labels, options, warm_start)
    val_ce = {n: validation_ce(f, rows[n].x_val, labels) for n, f in fits.items()}
    clock.done("fit")
    polishing = options.finalist_fit
    unfinished = unfinished_finalists(fits, val_ce, FINALISTS, polishing) if polishing is not None else {}
    if any(unfinished.values()):
        fits = polish(fits, {n: r.x_fit for n, r in rows.items()}, labels.stacked("train"), unfinished, polishing)
        val_ce = {n: validation_ce(f, rows[n].x_val, labels) for n, f in fits.items()}
    clock.done("polish")
    results = score_all(fits, val_ce, {n: r.x_test for n, r in rows.items()}, labels, options)
    clock.done("score")
    return UsableInformation(results, fits, clock.total(), clock.seconds)


class _Phases:
    """Seconds per phase of an estimate (host clock: on a GPU, queued work lands in the phase that
    waits for it), shown as a progress bar when asked."""

    def __init__(self, progress: bool):
        self.t0 = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.bar = tqdm(total=3, desc="usable information", disable=not progress)

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now
        self.bar.set_postfix_str(f"{phase} done")
        self.bar.update()
        if self.bar.n == self.bar.total:
            self.bar.close()

    def total(self) -> float:
        return time.perf_counter() - self.t0


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
