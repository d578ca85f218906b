"""The penalty grid: the one default, and its widening where a choice sits at an end of it.

Each feature set's grid starts as the one given; while a label set's choice (the one-standard-
error rule of :func:`~uinfo_fast.engine.scoring.choose`) sits at its smallest or largest
penalty, a decade is added past that end, up to ``grid_extension`` decades, and only the new
probes are fitted, from their neighbours' solutions. A grid that stops short of the validation
minimum reads a layer that holds nothing about a label far below 0 bits.
"""
from __future__ import annotations

import torch

from .fit import ProbeFit, fit_further, regridded
from .inputs import Labels
from .scoring import Validation, choose, validation_ce

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


def widened(grid: list[float], pulls: list[tuple[bool, ...]], options) -> list[float]:
    """``grid`` with a decade added past each end that a label set's choice sits at, within
    :func:`extension_bounds`."""
    low, high = extension_bounds(options)
    wider = list(grid)
    down, up = float(f"{grid[0] / 10:.12g}"), float(f"{grid[-1] * 10:.12g}")  # 1e-06, not 1.0000000000000002e-06
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
    fits = dict(fits)
    while True:
        pulls = edge_pulls(fits, val_ce)
        grids = {n: widened(grid_of(f), pulls[n], options) for n, f in fits.items()}
        growing = [n for n, f in fits.items() if len(grids[n]) > len(grid_of(f))]
        if not growing:
            return fits, val_ce, pulls
        new = {}
        for n in growing:
            old = set(fits[n].l2)
            fits[n] = regridded(fits[n], grids[n])
            new[n] = [k for k in range(fits[n].n_probes) if fits[n].l2[k] not in old]
        fits.update(fit_further({n: fits[n] for n in growing}, {n: x_fit[n] for n in growing},
                                labels.stacked("train"), new, options.fit))
        val_ce = {**val_ce, **{n: validation_ce(fits[n], x_val[n], labels) for n in growing}}
