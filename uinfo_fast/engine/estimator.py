"""Usable information I_u(Z; Y) = H(Y) - CE_test, from penalised softmax probes (docs/DESIGN.md, section 1).

Per (feature set, label set): probes for every penalty of a grid are fitted at once on the train
split (the grid widened where the choice sits at an end of it), the largest penalty whose
validation cross-entropy lies within one standard error of the lowest is chosen, and the chosen
probe is scored on the test split. The estimate runs in four steps, each a function below:
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
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .fit import SCHEDULES, FitOptions, ProbeFit, fit_feature_sets, fit_further, polish, regridded
from .probe_rows import standardisation, standardise, with_fit_range
from .layout import FitStatus
from .mlp import DEFAULT_FTOL, DEFAULT_HIDDEN, DEFAULT_RESTARTS, MlpFitOptions, MlpProbeFit, compatible, fit_mlp_sets
from .inputs import Features, check_feature_splits
from .labels import Labels, check_label_splits
from .results import LN2, UsableInformation, UsableInformationResult
from .grid import (DEFAULT_L2_GRID, GRID_EXTENSION, edge_pulls, grid_of, local_search_holds, nearby, spanning,
                   whole_where_missed, widen)
from .scoring import TIE_NATS, Validation, finalist_keys, score_all, unfinished_finalists, validation_ce
from .params import Boolean, Choice, Integer, ListOf, NoneOr, Real, option, routed, validate_fields
from .validation import check_l2

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


# Bootstrap resamples of the test cross-entropy's interval, everywhere a default is needed.
N_BOOTSTRAP = 200
# The read-outs q(y | z) the estimator can fit: softmax probes, and one-hidden-layer networks
# (engine/mlp.py).
FAMILIES = ("linear", "mlp")


@dataclass(frozen=True)
class EstimatorOptions:
    """The estimator's options (see :func:`estimate_usable_information`), checked when made."""

    l2_grid: tuple[float, ...] = option(DEFAULT_L2_GRID, check=ListOf(Real(0.0)),
                                        help="probe penalties to choose from, comma-separated")
    grid_extension: int = option(GRID_EXTENSION, check=Integer(0),
                                 help="decades the grid may widen past either end while the choice sits there (0: none)")
    val_fraction: float = option(0.2, check=_OPEN_UNIT,
                                 help="share of the probe-train rows held out to choose the penalty when there is no "
                                      "validation split")
    standardize: bool = option(True, check=Boolean(), help="scale every feature to zero mean and unit variance first")
    n_bootstrap: int = option(N_BOOTSTRAP, check=Integer(0), help="bootstrap resamples of the confidence interval")
    confidence: float = option(0.95, check=_OPEN_UNIT, help="level of the bootstrap confidence interval")
    seed: int = option(0, check=Integer(), help="validation split and bootstrap")
    max_iter: int = option(1000, check=Integer(0), help="L-BFGS iterations per probe at most")
    tol: float = option(1e-5, check=Real(0.0, low_open=True), flag="probe_tol",
                        help="max |gradient| every probe is fitted to (the chosen ones are polished further)")
    family: str = option("linear", check=Choice(FAMILIES), flag="probe_family",
                         help="the read-out: linear (a softmax probe) or mlp (one hidden ReLU layer, then softmax)")
    hidden: int = option(DEFAULT_HIDDEN, check=Integer(1), flag="probe_hidden", help="mlp probes: hidden units")
    restarts: int = option(DEFAULT_RESTARTS, check=Integer(1), flag="probe_restarts",
                           help="mlp probes: starts per (label set, penalty), the best on validation kept")
    mlp_tol: float = option(1e-4, check=Real(0.0, low_open=True), flag="probe_mlp_tol",
                            help="mlp probes: max |gradient| every probe is fitted to")
    mlp_ftol: float = option(DEFAULT_FTOL, check=Real(0.0, 1.0, high_open=True), flag="probe_mlp_ftol",
                             help="mlp probes: one whose objective fell by under this (relative) over its last 20 "
                                  "iterations has converged (0: off)")
    penalty_schedule: str = option("auto", check=Choice(SCHEDULES),
                                   help="how the penalties are fitted: batched, path or auto (see fit_probes)")
    polish_l2_tol: float | None = option(POLISH_L2_TOL, check=NoneOr(Real(0.0, low_open=True)),
                                         help="finalists are polished in float64 to max |gradient| <= this x l2 "
                                              "(none: choose as the grid fit left them)")
    warm_start: bool = option(True, check=Boolean(),
                              help="a tracker fits each measurement's probes on from the last measurement's (off: "
                                   "from scratch)")
    full_grid_every: int = option(1, check=Integer(1),
                                  help="a tracker searches the whole penalty grid every this many measurements and "
                                       "only the last choices' neighbours in between (1: the whole grid every time)")

    def __post_init__(self):
        object.__setattr__(self, "l2_grid", tuple(check_l2(self.l2_grid, "l2_grid")))
        validate_fields(self)

    @property
    def fit(self) -> FitOptions:
        return FitOptions(max_iter=self.max_iter, tol=self.tol, schedule=self.penalty_schedule)

    @property
    def mlp_fit(self) -> MlpFitOptions:
        return MlpFitOptions(hidden=self.hidden, restarts=self.restarts, seed=self.seed, max_iter=self.max_iter,
                             tol=self.mlp_tol, ftol=self.mlp_ftol)

    @property
    def finalist_fit(self) -> FitOptions | None:
        """How far the finalists are fitted before the choice between them (see :data:`FINALISTS`)."""
        if self.polish_l2_tol is None:
            return None
        return FitOptions(max_iter=self.max_iter, tol=self.tol, schedule=self.penalty_schedule,
                          l2_tol=self.polish_l2_tol)


# ---------------------------------------------------------------------------------------------
# fit, select, score


@dataclass(frozen=True)
class SetRows:
    """One feature set's rows as the fit and the scoring use them."""

    x_fit: torch.Tensor   # the train rows, standardised
    x_val: torch.Tensor
    x_test: torch.Tensor
    scaling: tuple[torch.Tensor, ...] | None  # mean, std, and the fit rows' range (probe_rows.with_fit_range)


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
    if scaling is None:
        return SetRows(x_train, x_val, features.test[name], None)
    x_fit = standardise(x_train, scaling, in_place=owned).to(x.dtype)
    return SetRows(x_fit, x_val, features.test[name], with_fit_range(scaling, x_fit))


def warm_inits(warm_start: UsableInformation | None, rows: dict[str, SetRows], labels: Labels,
               options: EstimatorOptions, local: bool = False) -> tuple[dict[str, ProbeFit | None], dict]:
    """The earlier fit of each feature set, where its label sets, classes and width still fit,
    laid out (:func:`regridded`) on the grid given widened as far as that fit's grid reached
    (:func:`~uinfo_fast.engine.grid.spanning`): a layer whose choice needed a wider grid starts
    there warm again. None: a cold start.
    With ``local``, a fit whose every label set has an earlier choice, and whose validation curves
    said that the neighbours would hold those choices (``warm_start.local_holds``), is laid out on
    those choices' neighbours only (:func:`~uinfo_fast.engine.grid.nearby`). Returns the inits and,
    for each feature set laid out locally, the earlier fit laid out on its whole grid."""
    counts = [labels.num_classes[n] for n in labels.names]
    inits, whole = {}, {}
    for name, r in rows.items():
        warm = warm_start.fits.get(name) if warm_start is not None else None
        if (warm is None or warm.label_names != labels.names or warm.num_classes != counts
                or warm.weight.shape[0] != r.x_fit.shape[1]):
            inits[name] = None
            continue
        base = sorted(options.l2_grid)
        grid = spanning(base, grid_of(warm), options) if options.penalty_schedule != "path" else base
        chosen = [res.l2 for res in warm_start.results if res.feature_set == name]
        if (local and options.penalty_schedule != "path" and len(chosen) == len(labels.names)
                and warm_start.local_holds.get(name, False)):
            near = nearby(grid, chosen)
            if len(near) < len(grid):
                whole[name], grid = regridded(warm, grid), near
        inits[name] = regridded(warm, grid)
    return inits, whole


def fit_all(rows: dict[str, SetRows], labels: Labels, options: EstimatorOptions,
            inits: dict[str, ProbeFit | None], expected: dict[str, list[int]] | None = None) -> dict[str, ProbeFit]:
    """Every (feature set, label set, penalty) probe: those with a warm start (``inits``, see
    :func:`warm_inits`) in one op call, each on its own grid, with the probes ``expected`` to be
    finalists (:func:`expected_finalists`) polished in the same call; the others from a cold start
    along the penalty path, in one call (the warm ones join them there when the schedule asks for
    the path)."""
    names, base = labels.names, list(options.l2_grid)
    counts, y = [labels.num_classes[n] for n in names], labels.stacked("train")
    classes = [labels.classes[n] for n in names]
    on_grid = [n for n in rows if inits[n] is None or options.penalty_schedule == "path"]
    fits = fit_feature_sets({n: rows[n].x_fit for n in on_grid}, y, names, counts, base, inits, options.fit,
                            {n: rows[n].scaling for n in on_grid}, classes) if on_grid else {}
    warm = {n: restarted(inits[n], rows[n], classes, options) for n in rows if n not in on_grid}
    if warm:
        fits.update(fit_further(warm, {n: rows[n].x_fit for n in warm}, y,
                                {n: list(range(f.n_probes)) for n, f in warm.items()}, options.fit,
                                polish=expected, polish_l2_tol=options.polish_l2_tol))
    return {n: fits[n] for n in rows}


def expected_finalists(warm_start: UsableInformation | None, inits: dict[str, ProbeFit | None],
                       options: EstimatorOptions) -> dict[str, list[int]]:
    """The probes of each warm start (``inits``) that were the last measurement's finalists
    (``warm_start.finalists``): most often this measurement's too, and polished in the fit's own
    op call they need no second one (docs/DESIGN.md, "Measuring every step")."""
    if warm_start is None or options.polish_l2_tol is None:
        return {}
    out = {}
    for name, init in inits.items():
        if init is None:
            continue
        where = {(init.label_col[k], init.l2[k]): k for k in range(init.n_probes)}
        out[name] = sorted({where[key] for key in warm_start.finalists.get(name, ()) if key in where})
    return out


def restarted(init: ProbeFit, rows: SetRows, classes, options: EstimatorOptions) -> ProbeFit:
    """An earlier fit as the start of this one: on the features' device and compute dtype, with
    this measurement's scaling and classes and no iterations counted yet."""
    x = rows.x_fit
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    on = dict(device=x.device)
    return replace(init, weight=init.weight.to(dtype=cdt, **on), bias=init.bias.to(dtype=cdt, **on),
                   objective=init.objective.to(**on), grad_max=init.grad_max.to(**on), status=init.status.to(**on),
                   n_iter=torch.zeros_like(init.n_iter, **on), standardize=rows.scaling,
                   label_sets=replace(init.label_sets, classes=classes),
                   tol=options.fit.tol)


def estimate(features: Features, labels: Labels, options: EstimatorOptions,
             warm_start: UsableInformation | None = None, progress: bool = False,
             local: bool = False) -> UsableInformation:
    """Usable information of every feature set about every label set, on validated inputs:
    fit every probe (widening a grid where the choice sits at an end), polish the finalists,
    choose, score, flag what makes a number less than a measurement. With ``local`` and a warm
    start, search only the neighbours of the last choices where they hold the choice
    (docs/DESIGN.md, "Measuring every step"). One-hidden-layer probes (``family="mlp"``) take
    :func:`estimate_mlp`."""
    if options.family == "mlp":
        return estimate_mlp(features, labels, options, warm_start, progress)
    clock = _Phases(progress)
    rows = {n: set_rows(n, features, labels, options) for n in features.train}
    x_fit, x_val = {n: r.x_fit for n, r in rows.items()}, {n: r.x_val for n, r in rows.items()}
    inits, whole = warm_inits(warm_start, rows, labels, options, local)
    fits = fit_all(rows, labels, options, inits, expected_finalists(warm_start, inits, options))
    classes = [labels.classes[n] for n in labels.names]
    whole = {n: restarted(f, rows[n], classes, options) for n, f in whole.items()}
    val_ce = {n: validation_ce(f, rows[n].x_val, labels) for n, f in fits.items()}
    fits, val_ce, stood = whole_where_missed(fits, val_ce, whole, x_fit, x_val, labels, options)
    fits, val_ce, pulls = widen(fits, val_ce, x_fit, x_val, labels, options)
    clock.done("fit")
    polishing = options.finalist_fit
    unfinished = unfinished_finalists(fits, val_ce, FINALISTS, polishing) if polishing is not None else {}
    if any(unfinished.values()):
        fits = polish(fits, x_fit, labels.stacked("train"), unfinished, polishing)
        val_ce = {n: validation_ce(f, rows[n].x_val, labels) for n, f in fits.items()}
        pulls = edge_pulls(fits, val_ce)  # the warnings speak of the choice the scores are made with
    clock.done("polish")
    results = score_all(fits, val_ce, {n: r.x_test for n, r in rows.items()}, labels, options)
    results = [flagged(r, fits[r.feature_set], pulls.get(r.feature_set), labels, options,
                       "local" if r.feature_set in stood else "full") for r in results]
    clock.done("score")
    finalists = finalist_keys(fits, val_ce, FINALISTS) if polishing is not None else {}
    return UsableInformation(results, fits, clock.total(), clock.seconds, local_search_holds(fits, val_ce), finalists)


def estimate_mlp(features: Features, labels: Labels, options: EstimatorOptions,
                 warm_start: UsableInformation | None = None, progress: bool = False) -> UsableInformation:
    """:func:`estimate` with one-hidden-layer probes: every (feature set, label set, penalty,
    restart) probe in one op call (warm from ``warm_start`` where it holds the same probes), the
    best restart of each penalty on validation kept, then the choice and the scores as for
    softmax probes. The grid given is searched as it is: no widening, no float64 polish."""
    clock = _Phases(progress)
    rows = {n: set_rows(n, features, labels, options) for n in features.train}
    names, grid, fit_options = labels.names, sorted(options.l2_grid), options.mlp_fit
    counts = [labels.num_classes[n] for n in names]
    inits = {}
    for n, r in rows.items():
        warm = warm_start.fits.get(n) if warm_start is not None else None
        warm = getattr(warm, "all_restarts", None) or warm
        fits_here = isinstance(warm, MlpProbeFit) and compatible(warm, names, counts, grid, r.x_fit.shape[1],
                                                                  fit_options)
        inits[n] = warm if fits_here else None
    fits = fit_mlp_sets({n: r.x_fit for n, r in rows.items()}, labels.stacked("train"), names, counts, grid,
                        fit_options, inits, {n: r.scaling for n, r in rows.items()},
                        [labels.classes[n] for n in names])
    fits, val_ce = best_restarts(fits, {n: validation_ce(f, rows[n].x_val, labels) for n, f in fits.items()})
    clock.done("fit")
    clock.done("polish")
    results = score_all(fits, val_ce, {n: r.x_test for n, r in rows.items()}, labels, options)
    results = [replace(flagged(r, fits[r.feature_set], None, labels, options), probe_family="mlp",
                       probe_hidden=options.hidden, probe_restarts=options.restarts) for r in results]
    clock.done("score")
    return UsableInformation(results, fits, clock.total(), clock.seconds)


def best_restarts(fits: dict[str, MlpProbeFit], val_ce: dict[str, Validation]
                  ) -> tuple[dict[str, MlpProbeFit], dict[str, Validation]]:
    """Of every (label set, penalty), the restart with the lowest validation cross-entropy: the
    fits and validation scores of those probes alone (one host synchronisation)."""
    picks = {}
    for n, f in fits.items():
        by_penalty = val_ce[n].mean.view(-1, f.restarts)
        picks[n] = by_penalty.argmin(1) + torch.arange(by_penalty.shape[0], device=by_penalty.device) * f.restarts
    host = torch.cat(list(picks.values())).tolist() if picks else []
    out_fits, out_val, start = {}, {}, 0
    for n, f in fits.items():
        keep = host[start:start + picks[n].numel()]
        start += picks[n].numel()
        idx = torch.tensor(keep, device=val_ce[n].device)
        out_fits[n] = f.select(keep)
        out_val[n] = Validation(val_ce[n].nll.index_select(1, idx), val_ce[n].mask.index_select(1, idx))
    return out_fits, out_val


_ENDINGS = {FitStatus.MAX_ITER: "it stopped at max_iter", FitStatus.FLAT: "its objective went flat",
            FitStatus.LINE_SEARCH_FAILED: "its line search failed", FitStatus.SLOW: "its objective stopped falling"}


def flagged(result: UsableInformationResult, fit: ProbeFit, pulls, labels: Labels,
            options: EstimatorOptions, search: str = "full") -> UsableInformationResult:
    """``result`` with the grid searched (and ``search``: "full", or "local" for the neighbours of
    the last choice), and with a status and warnings where its number is less
    than a measurement: a chosen probe that did not converge, a choice at a bound of the
    search, an interval wholly below 0."""
    notes = [result.warning] if result.warning else []
    status, grid = result.status, grid_of(fit)
    if not result.converged:
        k = fit.index(result.label_set, result.l2)
        status = "not_converged"
        notes.append(f"the chosen probe (l2={result.l2:g}) did not converge: {_ENDINGS[fit.statuses[k]]} after "
                     f"{int(fit.n_iter[k])} iterations with max |gradient| {float(fit.grad_max[k]):.2g} > tol "
                     f"{fit.tol:g}; the number depends on where the optimiser stopped (raise max_iter, or "
                     "standardize the features)")
    pull = pulls[labels.names.index(result.label_set)] if pulls else (False,) * 4
    for side, end, how in ((0, min(grid), "smaller"), (1, max(grid), "larger")):
        # the choice at a bound of the search, still falling past it, and a penalty past it possible
        if pull[side] and pull[side + 2] and end > 0:
            notes.append(f"validation cross-entropy still falls past l2={end:g}, the {how[:-2]}est penalty searched "
                         f"({min(grid):g} to {max(grid):g}): a {how} penalty may read more; widen l2_grid")
    if result.ci_high < -TIE_NATS / LN2:  # below 0 by more than the smoothing of the baseline can make it
        notes.append(f"the whole {options.confidence:.0%} interval lies below 0 bits: the probe predicts the test "
                     "labels worse than their train frequencies do; likely causes: too weak a penalty for these "
                     "features (overfitting), too few probe rows per class, or test labels distributed unlike the "
                     "train labels")
    return replace(result, status=status, warning="; ".join(notes) or None, l2_grid=tuple(grid), search=search)


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


def estimate_usable_information(features, labels, test_features, test_labels, *,
                                options: EstimatorOptions | None = None, num_classes=None,
                                val_features=None, val_labels=None, warm_start: UsableInformation | None = None,
                                local: bool = False, progress: bool = False, **shortcuts) -> UsableInformation:
    """Usable information, in bits, of every feature set about every label set.

    Args:
        features: train features, a tensor [N, D] or a mapping name -> [N, D_name] (e.g. layers).
        labels: train labels, a tensor [N] or a mapping name -> [N] int64 (e.g. coarse, fine).
        test_features, test_labels: the same for the disjoint test set (same names).
        options: an :class:`EstimatorOptions` (default: its defaults); ``**shortcuts`` set its
            fields by name on top (``l2_grid=..., n_bootstrap=...``). Among them: ``l2_grid``
            and ``grid_extension``, the penalties to choose from by validation CE, per (feature
            set, label set), widened a decade at a time up to ``grid_extension`` decades past
            each end while the choice sits at an end (results record the grid searched);
            ``val_fraction``, the share of the train rows held out to choose the penalty;
            ``n_bootstrap`` and ``confidence``; ``seed`` (the split and the bootstrap);
            ``max_iter``, ``tol`` and ``penalty_schedule`` (:func:`fit_probes`).
        num_classes: None (max label + 1 over train and test), an int, one per label set (a
            sequence), or a mapping by name (one rule with :func:`fit_probes`: ``labels.py``).
        warm_start: an earlier result for the same names (e.g. the previous checkpoint).
        local: with ``warm_start``, fit only the penalties next to its choices, and the whole grid
            for a feature set where an end of those neighbours comes within the tie margin of the
            best (results say which: ``search``). What a tracker does between its full searches
            (``full_grid_every``).
        progress: show a progress bar over the phases.
        val_features, val_labels: an explicit validation set (same names) to choose the penalty
            on, instead of carving ``val_fraction`` out of the train rows; the probes then fit on
            every train row. Use it when the train features come from examples the network was
            trained on: a network that memorised them makes a carved-out validation split as
            separable as the fit split, and the penalty it picks overfits.
    """
    options = routed({"options": options or EstimatorOptions()}, shortcuts, "estimate_usable_information")["options"]
    if (val_features is None) != (val_labels is None):
        raise ValueError("val_features and val_labels go together: give both or neither")
    feats = check_feature_splits(features, test_features, val_features)
    rows = {split: next(iter(sets.values())).shape[0] for split, sets in
            (("train", feats.train), ("test", feats.test), ("val", feats.val)) if sets}
    device = next(iter(feats.train.values())).device
    labs = check_label_splits(labels, test_labels, val_labels, num_classes, rows, device, options.val_fraction,
                              options.seed)
    result = estimate(feats, labs, options, warm_start, progress, local)
    for r in result.results:
        if r.warning:
            warnings.warn(f"usable information of {r.feature_set}/{r.label_set}: {r.warning}", stacklevel=2)
    return result
