"""Choosing and scoring probes on the features' device: the tie rule, the finalists, the
baseline, pointwise usable information and its bootstrap interval. Everything stays a tensor
until :func:`score_all` copies every number of a measurement to the host in one transfer."""
from __future__ import annotations

import functools

import torch

from .fit import ProbeFit, log_likelihood_of
from .labels import Labels
from .results import LN2, UsableInformation, UsableInformationResult

# Penalties whose validation cross-entropy lies within this of the lowest count as tied (the
# largest is chosen): far above the differences that stopping points make, far below the
# differences between neighbouring penalties of a grid. The margin is wider where the validation
# rows cannot tell two probes apart: one standard error of their paired difference
# (:meth:`Validation.margin`).
TIE_NATS = 1e-3
# Fewer train rows than this per class, on average, and a probe's test cross-entropy, hence I_u,
# is dominated by the classes it barely saw: the result carries a warning.
MIN_ROWS_PER_CLASS = 10
# Bootstrap resamples drawn at once: bounds the memory of the resample indices.
_RESAMPLE_CHUNK = 64
# The largest resample table (rows x resamples) kept between calls: 8 MiB of float64.
_CACHED_RESAMPLES = 1 << 20


class Validation:
    """Every probe's cross-entropy on the validation rows of classes it knows: per row
    (``nll`` [rows, K], 0 on rows left out; ``mask`` marks the rows counted) and on average
    (``mean`` [K], float64)."""

    def __init__(self, nll: torch.Tensor, mask: torch.Tensor):
        self.nll, self.mask = nll * mask, mask
        # A probe whose validation loss is not a number (no row of its label set's classes, a
        # diverged fit) can never be the best: infinity, not NaN, which compares with nothing.
        self.mean = (self.nll.sum(0) / mask.sum(0)).nan_to_num(nan=float("inf"))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def margin(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """How far probe ``a``'s mean may lie above probe ``b``'s and still count as tied, for
        index tensors of one shape (probes of the same label set): the larger of
        :data:`TIE_NATS` and the standard error of their paired difference over the rows.
        Within it, 500 validation rows (say) cannot tell which of the two predicts better, and
        choosing the weaker penalty on such a difference overfits by chance (a shuffled label
        read -0.03 bits that way)."""
        diff = self.nll[:, a] - self.nll[:, b]
        mask = self.mask[:, a]
        n = mask.sum(0)
        centred = (diff - (diff * mask).sum(0) / n) * mask
        se = (centred.pow(2).sum(0) / (n - 1).clamp_min(1) / n).sqrt()
        return se.clamp_min(TIE_NATS)


def probe_table(fit: ProbeFit, device) -> torch.Tensor:
    """[L, P] the probes of every label set of ``fit``, in penalty order, on ``device`` (label
    sets share one grid)."""
    return torch.tensor([fit.probes_of(j) for j in range(len(fit.label_names))], device=device)


def validation_ce(fit: ProbeFit, x_val: torch.Tensor, labels: Labels) -> Validation:
    """Every probe's cross-entropy on the validation rows of classes it knows."""
    ll = log_likelihood_of(fit, x_val, labels.stacked("val")).to(torch.float64)
    mask = torch.stack([labels.val_seen[labels.names[j]] for j in fit.label_col], 1).to(ll.dtype)  # [rows, K]
    return Validation(-ll, mask)


def finalist_table(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], count: int) -> dict[str, torch.Tensor]:
    """Per feature set, [L, count + 1] on the device: of each label set, the ``count`` probes with
    the lowest validation cross-entropy and the one :func:`choose` takes."""
    out = {}
    for name, fit in fits.items():
        probes = probe_table(fit, val_ce[name].device)
        top = probes.gather(1, val_ce[name].mean[probes].argsort(dim=1)[:, :count])
        out[name] = torch.cat([top, choose(fit, val_ce[name])[:, None]], 1)
    return out


def unfinished_finalists(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], count: int,
                         polish) -> dict[str, list[int]]:
    """Of the finalists of each (feature set, label set) (:func:`finalist_table`), those whose
    gradient has not reached the ``polish`` options' tolerance, as host indices: one host
    synchronisation for every feature set."""
    ranked = {}
    for name, top in finalist_table(fits, val_ce, count).items():
        top = top.flatten()
        fit = fits[name]
        target = polish.tolerance(torch.tensor(fit.l2, dtype=torch.float64, device=top.device)[top])
        ranked[name] = torch.where(fit.grad_max[top] > target, top, -1)
    return _host_lists(ranked, keep=lambda k: k >= 0)


def finalist_keys(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], count: int
                  ) -> dict[str, list[tuple[int, float]]]:
    """The finalists of each feature set (:func:`finalist_table`) as (label set index, penalty)
    pairs, which name the same probes in another fit of the same label sets: one host
    synchronisation for every feature set."""
    table = {n: t.flatten() for n, t in finalist_table(fits, val_ce, count).items()}
    return {n: sorted({(fits[n].label_col[k], fits[n].l2[k]) for k in probes})
            for n, probes in _host_lists(table).items()}


def _host_lists(per_set: dict[str, torch.Tensor], keep=lambda k: True) -> dict[str, list[int]]:
    """Device index vectors per feature set as sorted host lists of distinct kept indices, in one
    transfer."""
    flat = torch.cat(list(per_set.values())).tolist() if per_set else []
    out, start = {}, 0
    for name, idx in per_set.items():
        out[name] = sorted({k for k in flat[start:start + idx.numel()] if keep(k)})  # the chosen is often a top one
        start += idx.numel()
    return out


def choose(fit: ProbeFit, val: Validation) -> torch.Tensor:
    """[L] the chosen probe of every label set, on the device: of the penalties whose validation
    cross-entropy lies within its :meth:`Validation.margin` of the lowest (one standard error of
    the paired difference, at least :data:`TIE_NATS`), the largest (the simplest probe): the
    one-standard-error rule. Fits that differ only by where they stopped choose alike."""
    dev = val.device
    probes = probe_table(fit, dev)  # [L, P]
    vals = val.mean[probes]
    best = probes.gather(1, vals.argmin(dim=1, keepdim=True)).expand_as(probes)
    tied = vals <= vals.min(dim=1, keepdim=True).values + val.margin(probes, best)
    l2 = torch.tensor(fit.l2, dtype=torch.float64, device=dev)[probes]
    return probes.gather(1, torch.where(tied, l2, -1.0).argmax(dim=1, keepdim=True)).squeeze(1)


def chosen_shift(last: UsableInformation, old: dict[str, torch.Tensor], new: dict[str, torch.Tensor],
                 labels: Labels, rows: torch.Tensor) -> float:
    """How far, in bits, the chosen probes of ``last`` read the test ``rows`` differently on
    features ``new`` than on ``old`` (the same rows captured at two steps): the largest change of
    a mean test log-likelihood over the (feature set, label set) pairs of ``last``. Not a number
    when the features are not. One host synchronisation."""
    y = labels.stacked("test").index_select(0, rows)
    shifts = []
    for name in {r.feature_set for r in last.results if r.feature_set in new and r.feature_set in last.fits}:
        fit = last.fits[name]
        delta = log_likelihood_of(fit, new[name].index_select(0, rows), y) - \
            log_likelihood_of(fit, old[name].index_select(0, rows), y)  # [rows, K]
        for r in (r for r in last.results if r.feature_set == name):
            seen = labels.test_seen[r.label_set].index_select(0, rows).to(delta.dtype)
            shifts.append((delta[:, fit.index(r.label_set, r.l2)] * seen).sum() / seen.sum().clamp_min(1))
    return float(torch.stack(shifts).abs().max()) / LN2 if shifts else 0.0


def log_baseline(labels: Labels, name: str) -> torch.Tensor:
    """log of the baseline predictor of label set ``name``: its train marginal with one
    pseudo-count per class that occurs there (absent classes have no share), [K] float64."""
    prior = torch.bincount(labels.train[name], minlength=labels.num_classes[name]).to(torch.float64) + 1.0
    return (prior / prior.sum()).log()


def _count_chunks(m: int, n_bootstrap: int, seed: int):
    """[chunk, m] float64 tables, ``n_bootstrap`` rows in all: how often each of ``m`` rows is
    drawn in each resample, drawn on the host from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n_bootstrap, _RESAMPLE_CHUNK):
        idx = torch.randint(0, m, (min(_RESAMPLE_CHUNK, n_bootstrap - start), m), generator=gen)
        ones = torch.ones(idx.shape, dtype=torch.float64)
        yield torch.zeros(idx.shape, dtype=torch.float64).scatter_add_(1, idx, ones)


@functools.lru_cache(maxsize=4)
def _resample_counts(m: int, n_bootstrap: int, seed: int, device: torch.device) -> torch.Tensor:
    """All of :func:`_count_chunks` on ``device``, kept between calls: a tracker scores test sets
    of the same sizes with the same seed at every measurement, and the draws dominated scoring."""
    return torch.cat(list(_count_chunks(m, n_bootstrap, seed))).to(device)


def bootstrap(pointwise: torch.Tensor, n_bootstrap: int, confidence: float, seed: int) -> torch.Tensor:
    """[2] percentile bootstrap interval of the mean over examples, on their device; nan without
    resamples. Resamples are drawn on the host from ``seed``, so every device draws the same."""
    if n_bootstrap <= 0:
        return torch.full((2,), float("nan"), dtype=torch.float64, device=pointwise.device)
    values, m = pointwise.to(torch.float64), pointwise.numel()
    if m * n_bootstrap <= _CACHED_RESAMPLES:
        means = _resample_counts(m, n_bootstrap, seed, values.device) @ values / m
    else:
        means = torch.cat([c.to(values.device) @ values / m for c in _count_chunks(m, n_bootstrap, seed)])
    alpha = (1.0 - confidence) / 2.0
    return torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64, device=values.device))


def pair_numbers(fit: ProbeFit, chosen: torch.Tensor, j: int, test_ll: torch.Tensor, val_ce: Validation,
                 labels: Labels, options) -> tuple[torch.Tensor, torch.Tensor]:
    """(numbers [7 + P], pointwise bits [seen test rows]) of label set ``j`` under its chosen
    probe, on the device: bits, CI, test CE, H(Y), chosen probe, converged, then the validation
    CE of its P penalties."""
    label = labels.names[j]
    rows = labels.test_seen_rows[label]
    log_prior = log_baseline(labels, label).to(test_ll.device)[labels.test[label].index_select(0, rows)]
    ll = test_ll.index_select(0, rows).index_select(1, chosen.view(1)).squeeze(1)
    pointwise = (ll - log_prior) / LN2
    ci = bootstrap(pointwise, options.n_bootstrap, options.confidence, options.seed)
    converged = fit.converged.index_select(0, chosen.view(1)).to(torch.float64)
    val = val_ce.mean[torch.tensor(fit.probes_of(j), device=val_ce.device)]
    head = torch.stack([pointwise.mean(), ci[0], ci[1], -ll.mean(), -log_prior.mean() / LN2,
                        chosen.to(torch.float64), converged[0]])
    return torch.cat([head, val]), pointwise


def score_all(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], x_test: dict[str, torch.Tensor],
              labels: Labels, options) -> list[UsableInformationResult]:
    """Every (feature set, label set) pair scored on the device; its numbers reach the host in
    one transfer, the one host synchronisation of scoring."""
    parts, pointwise = [], []
    for name, fit in fits.items():
        test_ll = log_likelihood_of(fit, x_test[name], labels.stacked("test")).to(torch.float64)
        chosen = choose(fit, val_ce[name])
        for j in range(len(labels.names)):
            numbers, pw = pair_numbers(fit, chosen[j], j, test_ll, val_ce[name], labels, options)
            parts.append(numbers)
            pointwise.append(pw)
    host = torch.cat(parts + pointwise).cpu().split([p.numel() for p in parts + pointwise])
    numbers, pws = host[:len(parts)], host[len(parts):]
    pairs = [(name, j) for name in fits for j in range(len(labels.names))]
    return [result(fits[name], name, j, nums.tolist(), pw, labels) for (name, j), nums, pw in zip(pairs, numbers, pws)]


def result(fit: ProbeFit, name: str, j: int, nums: list[float], pointwise: torch.Tensor,
           labels: Labels) -> UsableInformationResult:
    label = labels.names[j]
    best, unseen = int(nums[5]), labels.unseen_test_rows[label]
    return UsableInformationResult(
        feature_set=name, label_set=label, bits=nums[0], ci_low=nums[1], ci_high=nums[2], test_ce_nats=nums[3],
        entropy_bits=nums[4], l2=fit.l2[best], num_classes=labels.num_classes[label],
        val_ce_nats={fit.l2[k]: v for k, v in zip(fit.probes_of(j), nums[7:])}, converged=bool(nums[6]),
        pointwise_bits=pointwise, unseen_test_rows=unseen,
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
