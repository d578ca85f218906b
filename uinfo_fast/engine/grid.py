"""The penalty grid: the one default, its widening where a choice sits at an end of it, and the
local search of a measurement that follows another.

Each feature set's grid starts as the one given; while a label set's choice (the one-standard-
error rule of :func:`~uinfo_fast.engine.scoring.choose`) sits at its smallest or largest
penalty, a decade is added past that end, up to ``grid_extension`` decades, and only the new
probes are fitted, from their neighbours' solutions. A grid that stops short of the validation
minimum reads a layer that holds nothing about a label far below 0 bits.

A local search fits only the penalties next to each label set's last choice (:func:`nearby`).
Validation cross-entropy against the penalty has one minimum, so when both ends of those
neighbours read clearly worse than the best of them, the choice is the whole grid's; where an
end that is not an end of the whole grid comes within the tie margin of the best, the feature
set goes back to the whole grid (:func:`whole_where_missed`), each probe there going on from its
own solution of the last measurement.
"""
from __future__ import annotations

import torch

from .fit import ProbeFit, fit_further, overlaid, regridded
from .labels import Labels
from .scoring import Validation, choose, probe_table, validation_ce

# Penalties for standardised features, the one default grid of the API, the tracker and the
# command line: scikit-learn's default C = 1 is l2 = 1 / N, 1e-4 at N = 10,000. The top, 10,
# is where a layer that carries nothing about a label is fitted best (a near-constant probe).
DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Decades the search may go past each end of the grid given, one at a time, while a label set's
# choice sits at that end.
GRID_EXTENSION = 3


def grid_of(fit: ProbeFit) -> list[float]:
    """The penalties a fit holds, ascending."""
    return sorted(set(fit.l2))


def extension_bounds(options) -> tuple[float, float]:
    """The smallest and largest penalty the search may reach from ``options.l2_grid``."""
    positive = [v for v in options.l2_grid if v > 0] or [0.0]
    factor = 10.0 ** options.grid_extension
    return min(positive) / factor * (1 - 1e-9), max(options.l2_grid) * factor * (1 + 1e-9)


def edge_pulls(fits: dict[str, ProbeFit], val_ce: dict[str, Validation]) -> dict[str, list[tuple[bool, ...]]]:
    """Per feature set and label set: (the choice sits at the smallest penalty, at the largest;
    the validation cross-entropy still falls past the smallest, past the largest: that end
    beats its neighbour by more than the tie margin, :meth:`Validation.margin`). A choice at an
    end widens the grid there; one still falling at a bound of the search gets a warning. One
    host synchronisation for every feature set."""
    flags = []
    for name, fit in fits.items():
        grid, v = grid_of(fit), val_ce[name]
        if len(grid) < 2:
            flags.append(torch.zeros(len(fit.label_names), 4, dtype=torch.bool, device=v.device))
            continue
        probes = torch.tensor([[fit.index(label, l2) for l2 in grid] for label in fit.label_names], device=v.device)
        chosen, vals = choose(fit, v), v.mean[probes]
        falls_low = vals[:, 0] < vals[:, 1] - v.margin(probes[:, 0], probes[:, 1])
        falls_high = vals[:, -1] < vals[:, -2] - v.margin(probes[:, -1], probes[:, -2])
        flags.append(torch.stack([chosen == probes[:, 0], chosen == probes[:, -1], falls_low, falls_high], 1))
    host = torch.cat(flags).tolist()
    out, start = {}, 0
    for name, fit in fits.items():
        out[name] = [tuple(p) for p in host[start:start + len(fit.label_names)]]
        start += len(fit.label_names)
    return out


def spanning(base: list[float], reached: list[float], options) -> list[float]:
    """``base`` (ascending) widened a decade at a time, as :func:`widen` does, down to the smallest
    and up to the largest of ``reached`` (an earlier fit's grid), within :func:`extension_bounds`:
    the grid a warm start resumes, with no decade left out between."""
    low, high = extension_bounds(options)
    grid = list(base)
    while grid[0] > 0 and min(reached) < grid[0] and _decade(grid[0], -1) >= low:
        grid.insert(0, _decade(grid[0], -1))
    while grid[-1] > 0 and max(reached) > grid[-1] and _decade(grid[-1], 1) <= high:
        grid.append(_decade(grid[-1], 1))
    return grid


def _decade(l2: float, sign: int) -> float:
    """A decade below (-1) or above (+1) ``l2``, rounded as written: 1e-06, not 1.0000000000000002e-06."""
    return float(f"{l2 * 10.0 ** sign:.12g}")


def nearby(grid: list[float], chosen: list[float]) -> list[float]:
    """The penalties of ``grid`` (ascending) next to each of ``chosen``, and those: the grid of a
    local search. The whole ``grid`` when a chosen penalty is not on it."""
    if any(c not in grid for c in chosen):
        return list(grid)
    keep = set()
    for c in chosen:
        i = grid.index(c)
        keep.update(grid[max(i - 1, 0):i + 2])
    return sorted(keep)


def _missed(fit: ProbeFit, val: Validation, whole: list[float], window: list[float] | None = None) -> bool:
    """Whether an end of ``window`` (penalties of ``fit``, ascending; default all of them) that is
    not an end of ``whole`` comes within the tie margin (:meth:`Validation.margin`) of a label
    set's lowest validation cross-entropy over ``window``: the choice, the minimum, or a flat
    stretch that may fall further past that end (a layer that held nothing and starts to learn
    reads flat at the large penalties). One host synchronisation."""
    grid = grid_of(fit)
    window = grid if window is None else window
    ends = [e for e, whole_end in ((0, whole[0]), (-1, whole[-1])) if window[e] != whole_end]
    if not ends:
        return False
    cols = torch.tensor([grid.index(v) for v in window], device=val.device)
    probes = probe_table(fit, val.device).index_select(1, cols)  # [L, window]
    vals = val.mean[probes]
    best = probes.gather(1, vals.argmin(dim=1, keepdim=True)).squeeze(1)
    near = [vals[:, e] <= vals.min(dim=1).values + val.margin(probes[:, e], best) for e in ends]
    return bool(torch.stack(near).any())


def local_search_holds(fits: dict[str, ProbeFit], val_ce: dict[str, Validation]) -> dict[str, bool]:
    """Per feature set, whether a search of its choices' neighbours alone would have held the
    choices on this measurement's validation curves. Where the curve is flat around a choice (a
    young network), the next measurement searches the whole grid at once instead of the
    neighbours first and then the whole grid: one op call, not two. Two host synchronisations
    per feature set."""
    holds = {}
    for name, fit in fits.items():
        grid = grid_of(fit)
        window = nearby(grid, [fit.l2[k] for k in choose(fit, val_ce[name]).tolist()])
        holds[name] = len(window) < len(grid) and not _missed(fit, val_ce[name], grid, window)
    return holds


def whole_where_missed(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], whole: dict[str, ProbeFit],
                       x_fit: dict[str, torch.Tensor], x_val: dict[str, torch.Tensor], labels: Labels,
                       options) -> tuple[dict, dict, set[str]]:
    """The feature sets searched locally (``whole``: each one's last fit laid out on its whole
    grid) fitted on the whole grid where :func:`_missed` says the neighbours may not hold the
    choice: the neighbours keep this measurement's solutions and the other probes go on from
    their own solutions of the last measurement, in one op call. Returns the fits, their
    validation cross-entropies and the feature sets whose local search stands."""
    missed = [n for n in whole if _missed(fits[n], val_ce[n], grid_of(whole[n]))]
    if not missed:
        return fits, val_ce, set(whole)
    fits, rest = dict(fits), {}
    for n in missed:
        fits[n], rest[n] = overlaid(whole[n], fits[n])
    fits.update(fit_further({n: fits[n] for n in missed}, {n: x_fit[n] for n in missed}, labels.stacked("train"),
                            rest, options.fit))
    return fits, {**val_ce, **{n: validation_ce(fits[n], x_val[n], labels) for n in missed}}, set(whole) - set(missed)


def regrid(grids: dict[str, list[float]], fits: dict[str, ProbeFit], val_ce: dict[str, Validation],
           x_fit: dict[str, torch.Tensor], x_val: dict[str, torch.Tensor], labels: Labels,
           options) -> tuple[dict, dict]:
    """``fits`` with each feature set of ``grids`` laid out on its new grid and only the new
    probes fitted, from their neighbours' solutions, in one op call; their validation
    cross-entropies with them."""
    fits, new = dict(fits), {}
    for n, grid in grids.items():
        old = set(fits[n].l2)
        fits[n] = regridded(fits[n], grid)
        new[n] = [k for k in range(fits[n].n_probes) if fits[n].l2[k] not in old]
    fits.update(fit_further({n: fits[n] for n in grids}, {n: x_fit[n] for n in grids}, labels.stacked("train"),
                            new, options.fit))
    return fits, {**val_ce, **{n: validation_ce(fits[n], x_val[n], labels) for n in grids}}


def widened(grid: list[float], pulls: list[tuple[bool, ...]], options) -> list[float]:
    """``grid`` with a decade added past each end that a label set's choice sits at, within
    :func:`extension_bounds`."""
    low, high = extension_bounds(options)
    wider = list(grid)
    down, up = _decade(grid[0], -1), _decade(grid[-1], 1)
    if any(p[0] for p in pulls) and grid[0] > 0 and down >= low:
        wider.insert(0, down)
    if any(p[1] for p in pulls) and grid[-1] > 0 and up <= high:
        wider.append(up)
    return wider


def widen(fits: dict[str, ProbeFit], val_ce: dict[str, Validation], x_fit: dict[str, torch.Tensor],
          x_val: dict[str, torch.Tensor], labels: Labels, options) -> tuple[dict, dict, dict]:
    """Widens each feature set's grid a decade at a time while a label set's choice sits at an end
    of it, fitting only the new probes (from their neighbours' solutions), every feature set in
    one op call per round (``x_fit``, ``x_val``: each feature set's fit and validation rows).
    Returns the fits, their validation cross-entropies and the pulls at the end (the warnings
    read those at the bounds)."""
    while True:
        pulls = edge_pulls(fits, val_ce)
        grids = {n: widened(grid_of(f), pulls[n], options) for n, f in fits.items()}
        growing = [n for n, f in fits.items() if len(grids[n]) > len(grid_of(f))]
        if not growing:
            return fits, val_ce, pulls
        fits, val_ce = regrid({n: grids[n] for n in growing}, fits, val_ce, x_fit, x_val, labels, options)
