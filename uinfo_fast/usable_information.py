"""Usable information I_u(Z; Y) = H(Y) - CE_test, from penalised softmax probes (DESIGN.md §1).

Per (feature set, label set): probes for every penalty of a grid are fitted at once on a
train split, the penalty with the lowest cross-entropy on a validation split carved out of the
train features is chosen, and the chosen probe is scored on the test features.

H(Y) is estimated as the test cross-entropy of the best constant predictor, the add-one smoothed
label marginal of the train features. With equal train and test marginals this is the entropy
of the labels; in general it makes I_u the V-information gain of the probe over knowing only
the label frequencies, and makes the pointwise values average exactly to I_u. Nothing is
clamped: a useless representation can give a slightly negative I_u.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ._checks import check_features, check_l2, check_labels, feature_sets, label_sets
from .probes import ProbeFit, fit_probes

LN2 = math.log(2.0)
# Penalties for standardised features: scikit-learn's default C = 1 is l2 = 1 / N, about 2e-5
# at N = 50,000; the grid spans four decades around and above it.
DEFAULT_L2_GRID = tuple(float(v) for v in torch.logspace(-5, -1, 8, dtype=torch.float64))


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
    val_ce_nats: dict[float, float]
    converged: bool
    pointwise_bits: torch.Tensor = field(repr=False)

    def row(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "label_set": self.label_set,
            "usable_information_bits": self.bits,
            "ci_low_bits": self.ci_low,
            "ci_high_bits": self.ci_high,
            "test_cross_entropy_nats": self.test_ce_nats,
            "entropy_bits": self.entropy_bits,
            "l2": self.l2,
            "num_classes": self.num_classes,
            "converged": self.converged,
        }


@dataclass
class UsableInformation:
    """Results for every (feature set, label set) pair, plus the probe fits for warm starts."""

    results: list[UsableInformationResult]
    fits: dict[str, ProbeFit] = field(repr=False)
    seconds: float = 0.0

    def __getitem__(self, key: tuple[str, str]) -> UsableInformationResult:
        for r in self.results:
            if (r.feature_set, r.label_set) == tuple(key):
                return r
        raise KeyError(f"no result for (feature set, label set) = {key!r}")

    def rows(self) -> list[dict]:
        return [r.row() for r in self.results]

    def __str__(self) -> str:
        lines = [f"{'features':<14}{'labels':<10}{'I_u (bits)':>11}{'95% CI':>18}{'H(Y)':>8}{'CE test':>9}{'l2':>10}"]
        for r in self.results:
            ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
            lines.append(f"{r.feature_set:<14}{r.label_set:<10}{r.bits:>11.3f}{ci:>18}{r.entropy_bits:>8.3f}"
                         f"{r.test_ce_nats / LN2:>9.3f}{r.l2:>10.1e}")
        return "\n".join(lines)


def _split(n: int, val_fraction: float, seed: int):
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise ValueError(f"{n} train rows are too few to carve a validation split of fraction {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


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


def _bootstrap(pointwise: torch.Tensor, n_bootstrap: int, confidence: float, seed: int) -> tuple[float, float]:
    if n_bootstrap <= 0:
        return float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    values = pointwise.to("cpu", torch.float64)
    means = []
    for start in range(0, n_bootstrap, 64):  # bounded memory: 64 resamples at a time
        b = min(64, n_bootstrap - start)
        idx = torch.randint(0, values.numel(), (b, values.numel()), generator=gen)
        means.append(values[idx].mean(1))
    means = torch.cat(means)
    alpha = (1.0 - confidence) / 2.0
    q = torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


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
    import time

    t0 = time.perf_counter()
    train = feature_sets(features, "features")
    test = feature_sets(test_features, "test_features")
    if set(train) != set(test):
        raise ValueError(f"features and test_features name different feature sets: {sorted(train)} vs {sorted(test)}")
    ytrain = label_sets(labels, "labels")
    ytest = label_sets(test_labels, "test_labels")
    if set(ytrain) != set(ytest):
        raise ValueError(f"labels and test_labels name different label sets: {sorted(ytrain)} vs {sorted(ytest)}")
    grid = check_l2(l2_grid, "l2_grid")
    val = yval = None
    if (val_features is None) != (val_labels is None):
        raise ValueError("val_features and val_labels go together: give both or neither")
    if val_features is not None:
        val = feature_sets(val_features, "val_features")
        yval = label_sets(val_labels, "val_labels")
        if set(val) != set(train) or set(yval) != set(ytrain):
            raise ValueError(f"val_features/val_labels must name the same feature and label sets as the train ones: "
                             f"{sorted(train)}, {sorted(ytrain)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    results, fits = [], {}
    bar = tqdm(train.items(), desc="usable information", unit="feature set", disable=not progress)
    for fname, xtr in bar:
        xtr = check_features(xtr, f"features[{fname!r}]")
        xte = check_features(test[fname], f"test_features[{fname!r}]")
        if xte.shape[1] != xtr.shape[1]:
            raise ValueError(f"test_features[{fname!r}] has {xte.shape[1]} columns, features[{fname!r}] has {xtr.shape[1]}")
        if xte.device != xtr.device:
            raise ValueError(f"test_features[{fname!r}] is on {xte.device} but features[{fname!r}] on {xtr.device}")
        names = list(ytrain)
        counts = []
        for n in names:
            a = check_labels(ytrain[n], f"labels[{n!r}]", xtr.shape[0], xtr.device)
            b = check_labels(ytest[n], f"test_labels[{n!r}]", xte.shape[0], xte.device)
            given = num_classes if isinstance(num_classes, int) or num_classes is None else num_classes[n]
            c = given if given is not None else int(max(a.max(), b.max())) + 1
            for y, nm in ((a, f"labels[{n!r}]"), (b, f"test_labels[{n!r}]")):
                check_labels(y, nm, y.shape[0], y.device, c)
            counts.append(c)
        if val is None:
            fit_idx, val_idx = _split(xtr.shape[0], val_fraction, seed)
            fit_idx, val_idx = fit_idx.to(xtr.device), val_idx.to(xtr.device)
            x_val, y_val = xtr.index_select(0, val_idx), {n: ytrain[n].index_select(0, val_idx) for n in names}
        else:
            fit_idx = torch.arange(xtr.shape[0], device=xtr.device)
            x_val = check_features(val[fname], f"val_features[{fname!r}]")
            if x_val.shape[1] != xtr.shape[1] or x_val.device != xtr.device:
                raise ValueError(f"val_features[{fname!r}] must have {xtr.shape[1]} columns on {xtr.device}")
            y_val = {n: check_labels(yval[n], f"val_labels[{n!r}]", x_val.shape[0], x_val.device, c)
                     for n, c in zip(names, counts)}
        cdt = torch.float64 if xtr.dtype == torch.float64 else torch.float32
        x_fit = xtr.index_select(0, fit_idx)
        if standardize:
            mean, std = standardisation(x_fit)
            x_fit = ((x_fit.to(cdt) - mean) / std).to(xtr.dtype)
            scaling = (mean, std)
        else:
            scaling = None
        y_fit = {n: ytrain[n].index_select(0, fit_idx) for n in names}
        init = None
        if warm_start is not None and fname in warm_start.fits:
            prev = warm_start.fits[fname]
            if prev.label_names == names and prev.num_classes == counts and prev.weight.shape[0] == xtr.shape[1]:
                init = prev
        fit = fit_probes(x_fit, y_fit, grid, num_classes=counts, init=init, max_iter=max_iter, tol=tol,
                         schedule=schedule)
        fit.standardize = scaling
        fits[fname] = fit
        val_ce = fit.cross_entropy(x_val, y_val)
        test_ll = fit.log_likelihood(xte, {n: ytest[n] for n in names}).to(torch.float64)
        for j, n in enumerate(names):
            ks = [k for k in range(fit.n_probes) if fit.label_col[k] == j]
            best = min(ks, key=lambda k: float(val_ce[k]))
            prior = torch.bincount(ytrain[n].index_select(0, fit_idx), minlength=counts[j]).to(torch.float64) + 1.0
            log_prior = (prior / prior.sum()).log().to(test_ll.device)
            pointwise = (test_ll[:, best] - log_prior[ytest[n]]) / LN2
            ci = _bootstrap(pointwise, n_bootstrap, confidence, seed)
            results.append(UsableInformationResult(
                feature_set=fname,
                label_set=n,
                bits=float(pointwise.mean()),
                ci_low=ci[0],
                ci_high=ci[1],
                test_ce_nats=float(-test_ll[:, best].mean()),
                entropy_bits=float(-log_prior[ytest[n]].mean()) / LN2,
                l2=fit.l2[best],
                num_classes=counts[j],
                val_ce_nats={fit.l2[k]: float(val_ce[k]) for k in ks},
                converged=bool(fit.converged[best]),
                pointwise_bits=pointwise.cpu(),
            ))
            bar.set_postfix_str(f"{fname}/{n}: {results[-1].bits:.3f} bits")
    return UsableInformation(results, fits, time.perf_counter() - t0)
