"""Fits in progress: warm starts, and calls of the ``fit_probes`` op on groups of probes of
several feature sets at once, all together or along the penalty path (the op's schedule), in
the features' arithmetic or in float64 (the polish of chosen probes)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .extension import ops
from .layout import ProbeLayout, meta


@dataclass
class FitWork:
    """One feature set's parameters and per-probe outcomes, filled in place group by group;
    every probe of the layout belongs to exactly one group of the grid fit, so the work is
    complete when the groups are."""

    x: torch.Tensor          # [N, D] the features the probes are fitted on
    layout: ProbeLayout
    weight: torch.Tensor     # [D, C] compute dtype
    bias: torch.Tensor       # [C]
    objective: torch.Tensor  # [K] float64
    grad_max: torch.Tensor   # [K] float64
    n_iter: torch.Tensor     # [K] int64
    status: torch.Tensor     # [K] int64 (FitStatus codes)

    @classmethod
    def start(cls, x: torch.Tensor, layout: ProbeLayout, init=None) -> FitWork:
        """Zeros, or a copy of ``init``'s parameters (a warm start; ``init`` itself is left as it is)."""
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        n_cols, k, dev = layout.offsets[-1], layout.n_probes, x.device
        if init is not None:
            weight = init.weight.to(device=dev, dtype=cdt, copy=True)
            bias = init.bias.to(device=dev, dtype=cdt, copy=True)
        else:
            weight = torch.zeros(x.shape[1], n_cols, dtype=cdt, device=dev)
            bias = torch.zeros(n_cols, dtype=cdt, device=dev)
        f64 = dict(dtype=torch.float64, device=dev)
        return cls(x, layout, weight, bias, torch.empty(k, **f64), torch.empty(k, **f64),
                   torch.zeros(k, dtype=torch.int64, device=dev), torch.zeros(k, dtype=torch.int64, device=dev))

    @classmethod
    def of(cls, fit, x: torch.Tensor) -> FitWork:
        """The work a finished :class:`ProbeFit` holds, copied, to fit some of its probes further."""
        return cls(x, fit.layout, fit.weight.clone(), fit.bias.clone(),
                   fit.objective.clone(), fit.grad_max.clone(), fit.n_iter.clone(), fit.status.clone())

    def columns(self, probes: list[int]) -> torch.Tensor:
        lay = self.layout
        return torch.cat([torch.arange(lay.offsets[k], lay.offsets[k + 1]) for k in probes]).to(self.x.device)

    def problem(self, probes: list[int], dtype: torch.dtype) -> tuple:
        """The op's arguments for ``probes``: (x, weight, bias, offsets, label columns, l2)."""
        lay, dev, cols = self.layout, self.x.device, self.columns(probes)
        offsets = [0]
        for k in probes:
            offsets.append(offsets[-1] + lay.offsets[k + 1] - lay.offsets[k])
        return (self.x, self.weight.index_select(1, cols).to(dtype), self.bias.index_select(0, cols).to(dtype),
                meta(offsets, dev), meta([lay.label_col[k] for k in probes], dev),
                torch.tensor([lay.l2[k] for k in probes], dtype=torch.float64, device=dev))

    def absorb(self, probes: list[int], w, b, obj, gmax, n_iter, status) -> None:
        """Writes the op's results for ``probes`` back; a probe fitted again counts all its
        iterations."""
        cols, idx = self.columns(probes), torch.tensor(probes, device=self.x.device)
        self.weight[:, cols] = w.to(self.weight.dtype)
        self.bias[cols] = b.to(self.bias.dtype)
        self.n_iter.index_add_(0, idx, n_iter)
        for out, new in ((self.objective, obj), (self.grad_max, gmax), (self.status, status)):
            out.index_copy_(0, idx, new)


def run(works: Sequence[FitWork], probes: Sequence[list[int]], labels: torch.Tensor, options,
        dtype: torch.dtype | None = None, schedule: str = "batched", polish: Sequence[list[int]] | None = None,
        polish_l2_tol: float | None = None) -> None:
    """Fits ``probes[s]`` of every ``works[s]`` from their current parameters, in one op call
    for all feature sets (those with no probe listed sit it out), in ``dtype`` arithmetic
    (default: each work's own), all at once or (``schedule="path"``) one penalty at a time
    from the largest down, inside the op (see the ``fit_probes`` schema). Then, in the same call,
    ``polish[s]`` (some of ``probes[s]``) are fitted on in float64 to max |gradient| <=
    min(tol, ``polish_l2_tol`` x penalty) where they are not there yet."""
    polish = polish or [[] for _ in works]
    chosen = [(w, p, q) for w, p, q in zip(works, probes, polish) if p]
    if not chosen:
        return
    problems = [w.problem(p, dtype or w.weight.dtype) for w, p, _ in chosen]
    x, weight, bias, offsets, label_col, l2 = (list(column) for column in zip(*problems))
    dev = x[0].device
    # host lists: the op reads them on the host anyway
    lists = [torch.tensor([p.index(k) for k in q], dtype=torch.int64) for _, p, q in chosen] if any(
        q for *_, q in chosen) else None
    results = ops.fit_probes(x, labels, weight, bias, offsets, label_col, l2, options.max_iter, options.tol,
                             options.history, options.check_every_on(dev), check_inputs=False,  # validated once
                             l2_tol=options.l2_tol, schedule=schedule, polish=lists, polish_l2_tol=polish_l2_tol)
    for s, (w, p, _) in enumerate(chosen):
        w.absorb(p, *(r[s] for r in results))


def fit_grid(works: Sequence[FitWork], on_path: Sequence[bool], labels: torch.Tensor, options) -> None:
    """Every probe of every work: the works ``on_path`` (cold starts) along the penalty path,
    the others all at once; one op call for each of the two kinds."""
    for path in (True, False):
        run(works, [list(range(w.layout.n_probes)) if p == path else [] for w, p in zip(works, on_path)], labels,
            options, schedule="path" if path else "batched")
