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
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .fit import (SCHEDULES, FitOptions, ProbeFit, compatible_init, fit_validated, log_likelihood_of, standardisation,
                  standardise)
from .results import LN2, UsableInformation, UsableInformationResult
from .params import Boolean, Choice, Integer, Real, validate_params
from .validation import check_features, check_l2, check_labels, feature_sets, label_sets, same_names

# Penalties for standardised features: scikit-learn's default C = 1 is l2 = 1 / N, about 2e-5
# at N = 50,000; the grid spans four decades around and above it.
DEFAULT_L2_GRID = tuple(float(v) for v in torch.logspace(-5, -1, 8, dtype=torch.float64))
_OPEN_UNIT = Real(0.0, 1.0, low_open=True, high_open=True)


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

    _CONSTRAINTS = {"val_fraction": _OPEN_UNIT, "standardize": Boolean(), "n_bootstrap": Integer(0),
                    "confidence": _OPEN_UNIT, "seed": Integer(), "schedule": Choice(SCHEDULES)}

    def __post_init__(self):
        object.__setattr__(self, "l2_grid", tuple(check_l2(self.l2_grid, "l2_grid")))
        validate_params(self, self._CONSTRAINTS)
        self.fit  # noqa: B018  (max_iter and tol are checked by FitOptions)

    @property
    def fit(self) -> FitOptions:
        return FitOptions(max_iter=self.max_iter, tol=self.tol, schedule=self.schedule)


@dataclass(frozen=True)
class Labels:
    """Validated labels: name -> [rows] per split, class counts, and the validation rows.

    ``train`` holds the rows the probes are fitted on. When the validation split was carved out
    of the train rows, ``carve`` is (fit rows, validation rows) of the train features.
    """

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    num_classes: dict[str, int]
    carve: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def names(self) -> list[str]:
        return list(self.train)

    def stacked(self, split: str) -> torch.Tensor:
        """The labels of ``split`` ("train", "val" or "test") as one [rows, L] tensor."""
        return torch.stack(list(getattr(self, split).values()), 1)


@dataclass(frozen=True)
class Features:
    """Validated features: name -> [rows, D] per split (``val`` None when carved from train)."""

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor] | None
    test: dict[str, torch.Tensor]


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, validation rows) of ``n`` train rows: a ``val_fraction`` share, drawn from ``seed``."""
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise ValueError(f"{n} train rows are too few to carve a validation split of fraction {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


# ---------------------------------------------------------------------------------------------
# validate


def check_feature_splits(features, test_features, val_features=None) -> Features:
    """Features of the three splits, each feature set checked once: type, shape, finite values,
    the same width and device in every split."""
    splits = {"features": feature_sets(features, "features"),
              "test_features": feature_sets(test_features, "test_features")}
    if val_features is not None:
        splits["val_features"] = feature_sets(val_features, "val_features")
    train = splits["features"]
    for arg, sets in splits.items():
        same_names(train, sets, "feature sets", "features", arg)
        for name, x in sets.items():
            check_features(x, f"{arg}[{name!r}]")
    for arg, sets in splits.items():
        for name, x in sets.items():
            ref = train[name]
            if x.shape[1] != ref.shape[1] or x.device != ref.device:
                raise ValueError(f"{arg}[{name!r}] has {x.shape[1]} columns on {x.device}, features[{name!r}] has "
                                 f"{ref.shape[1]} on {ref.device}")
    return Features(train, splits.get("val_features"), splits["test_features"])


def check_label_splits(labels, test_labels, val_labels, num_classes, rows: Mapping[str, int], device,
                       val_fraction: float, seed: int, *, rows_of: str = "features",
                       train_name: str = "labels") -> Labels:
    """Labels of the three splits, each label set checked once against its split's row count
    (``rows`` by split: "train", "test", "val"), the device and its class count; the validation
    split carved from the train rows when no validation labels are given. Errors call the train
    labels ``train_name`` and the others test_labels and val_labels."""
    given = {"train": label_sets(labels, train_name), "test": label_sets(test_labels, "test_labels")}
    if val_labels is not None:
        given["val"] = label_sets(val_labels, "val_labels")
    arg = {"train": train_name, "test": "test_labels", "val": "val_labels"}
    for split, sets in given.items():
        same_names(given["train"], sets, "label sets", train_name, arg[split])
        for n, y in sets.items():
            check_labels(y, f"{arg[split]}[{n!r}]", rows[split], device, rows_of=rows_of)
    counts = _class_counts(given, num_classes)
    for split, sets in given.items():
        for n, y in sets.items():
            check_labels(y, f"{arg[split]}[{n!r}]", rows[split], device, counts[n], rows_of=rows_of)
    train, val, carve = given["train"], given.get("val"), None
    if val is None:
        carve = tuple(i.to(device) for i in validation_split(rows["train"], val_fraction, seed))
        val = {n: y.index_select(0, carve[1]) for n, y in train.items()}
        train = {n: y.index_select(0, carve[0]) for n, y in train.items()}
    return Labels(train, val, given["test"], counts, carve)


def _class_counts(given: dict, num_classes) -> dict[str, int]:
    """Classes per label set: ``num_classes`` (an int or a mapping), else max label + 1 over
    every split; at least 2."""
    counts = {}
    for n in given["train"]:
        if isinstance(num_classes, Mapping):
            if n not in num_classes:
                raise ValueError(f"num_classes has no entry for label set {n!r}; it names {sorted(num_classes)}")
            c = num_classes[n]
        else:
            c = num_classes
        if c is None:
            c = max(int(sets[n].max()) for sets in given.values()) + 1
        if not isinstance(c, int) or isinstance(c, bool) or c < 2:
            raise ValueError(f"label set {n!r} needs at least 2 classes, got num_classes={c!r}")
        counts[n] = c
    return counts


# ---------------------------------------------------------------------------------------------
# fit, select, score


def fit_feature_set(x: torch.Tensor, labels: Labels, options: EstimatorOptions,
                    warm: ProbeFit | None) -> ProbeFit:
    """Every (label set, penalty) probe of one feature set, on its train rows (standardised
    there), warm-started from ``warm`` when its layout fits."""
    scaling = standardisation(x) if options.standardize else None
    x_fit = standardise(x, scaling).to(x.dtype) if scaling is not None else x
    names, counts = labels.names, [labels.num_classes[n] for n in labels.names]
    grid = list(options.l2_grid)
    init = warm if (warm is not None and warm.label_names == names and
                    compatible_init(warm, counts, grid, x.shape[1])) else None
    return fit_validated(x_fit, labels.stacked("train"), names, counts, grid, init, options.fit, scaling)


def select_penalty(fit: ProbeFit, val_ce: torch.Tensor, label_index: int) -> int:
    """The probe of label set ``label_index`` with the lowest validation cross-entropy."""
    return min(fit.probes_of(label_index), key=lambda k: float(val_ce[k]))


def score(fit: ProbeFit, best: int, j: int, name: str, test_ll: torch.Tensor, val_ce: torch.Tensor,
          labels: Labels, options: EstimatorOptions) -> UsableInformationResult:
    """I_u of the chosen probe ``best`` of label set ``j`` (called ``name``) on the test split:
    the mean of the pointwise gains over the smoothed train marginal, with its bootstrap CI."""
    label = labels.names[j]
    prior = torch.bincount(labels.train[label], minlength=labels.num_classes[label]).to(torch.float64) + 1.0
    log_prior = (prior / prior.sum()).log().to(test_ll.device)
    y_test = labels.test[label]
    pointwise = (test_ll[:, best] - log_prior[y_test]) / LN2
    ci = bootstrap(pointwise, options.n_bootstrap, options.confidence, options.seed)
    return UsableInformationResult(
        feature_set=name, label_set=label, bits=float(pointwise.mean()), ci_low=ci[0], ci_high=ci[1],
        test_ce_nats=float(-test_ll[:, best].mean()), entropy_bits=float(-log_prior[y_test].mean()) / LN2,
        l2=fit.l2[best], num_classes=labels.num_classes[label],
        val_ce_nats={fit.l2[k]: float(val_ce[k]) for k in fit.probes_of(j)},
        converged=bool(fit.converged[best]), pointwise_bits=pointwise.cpu())


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
    fit = fit_feature_set(x_train, labels, options, warm)
    val_ce = -log_likelihood_of(fit, x_val, labels.stacked("val")).to(torch.float64).mean(0)
    test_ll = log_likelihood_of(fit, features.test[name], labels.stacked("test")).to(torch.float64)
    results = [score(fit, select_penalty(fit, val_ce, j), j, name, test_ll, val_ce, labels, options)
               for j in range(len(labels.names))]
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
    return estimate(feats, labs, options, warm_start, progress)
