"""A fit in progress: warm starts, runs of the ``fit_probes`` op on groups of probes, and the
penalty path that orders those runs from a cold start."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .layout import FitStatus, ProbeLayout, meta
from .extension import ops


@dataclass
class FitWork:
    """Parameters and per-probe outcomes of a fit, filled in place group by group; every probe
    of the layout belongs to exactly one group, so the work is complete when the groups are."""

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
        return cls(layout, weight, bias, torch.empty(k, **f64), torch.empty(k, **f64),
                   torch.zeros(k, dtype=torch.int64, device=dev), torch.zeros(k, dtype=torch.int64, device=dev))

    def run(self, x: torch.Tensor, labels: torch.Tensor, probes: list[int], options,
            dtype: torch.dtype | None = None) -> None:
        """Fits the ``probes`` listed (indices into the layout) with one op call, from their
        current parameters, in ``dtype`` arithmetic (default: the work's own)."""
        lay, dev = self.layout, x.device
        cols = torch.cat([torch.arange(lay.offsets[k], lay.offsets[k + 1]) for k in probes]).to(dev)
        sub_offsets = [0]
        for k in probes:
            sub_offsets.append(sub_offsets[-1] + lay.offsets[k + 1] - lay.offsets[k])
        l2 = torch.tensor([lay.l2[k] for k in probes], dtype=torch.float64, device=dev)
        dt = dtype or self.weight.dtype
        w, b, obj, gmax, n_iter, status = ops.fit_probes(
            x, labels, self.weight.index_select(1, cols).to(dt), self.bias.index_select(0, cols).to(dt),
            meta(sub_offsets, dev), meta([lay.label_col[k] for k in probes], dev), l2, options.max_iter, options.tol,
            options.history, options.check_every_on(dev), check_inputs=False)  # validated once, by the caller
        self.weight[:, cols] = w.to(self.weight.dtype)
        self.bias[cols] = b.to(self.bias.dtype)
        idx = torch.tensor(probes, device=dev)
        self.n_iter.index_add_(0, idx, n_iter)  # a probe refined in float64 counts both runs
        for out, new in ((self.objective, obj), (self.grad_max, gmax), (self.status, status)):
            out.index_copy_(0, idx, new)

    @classmethod
    def of(cls, fit) -> FitWork:
        """The work a finished :class:`ProbeFit` holds, copied, to fit some of its probes further."""
        return cls(ProbeLayout(fit.offsets, fit.label_col, fit.l2), fit.weight.clone(), fit.bias.clone(),
                   fit.objective.clone(), fit.grad_max.clone(), fit.n_iter.clone(), fit.status.clone())

    def refine(self, x: torch.Tensor, labels: torch.Tensor, probes: list[int], options) -> None:
        """Continues in float64 those of ``probes`` whose float32 objective went flat before
        their gradient reached ``options.tol``.

        Near the optimum of a near-separable probe (small penalty, few rows per class) float32
        rounding of the logits makes the objective noisy at about 1e-6 relative: the line search
        stops on a flat objective while the weights can still be far along a valley of low
        curvature, far enough to move the test cross-entropy by hundredths of a bit, and to stop
        warm and cold fits of the same features at different points. Float64 has no such floor;
        the features are widened a row chunk at a time, never copied whole.
        """
        if self.weight.dtype == torch.float64:
            return
        stalled = ((self.status == int(FitStatus.FLAT)) & (self.grad_max > options.tol)).tolist()
        stalled = [k for k in probes if stalled[k]]
        if stalled:
            self.run(x, labels, stalled, options, dtype=torch.float64)


def secant_ratio(l2_values: list[float], done: list[int], new: int) -> float:
    """How far past the last solution the next stage of the path starts, in log(l2).

    From the third stage on, the start is the secant through the last two solutions,
    w_a + r (w_a - w_b): it follows the path's growth of the weights as the penalty falls, and
    cuts the iterations over restarting from w_a (bench/RESULTS.md). r is capped at 1 so that an
    uneven grid cannot throw the start far out; a zero or repeated penalty restarts from w_a.
    """
    if len(done) < 2:
        return 0.0
    la, lb, lnew = l2_values[done[-1]], l2_values[done[-2]], l2_values[new]
    if not (lnew > 0 and lb > la > lnew):
        return 0.0
    return min(1.0, math.log(la / lnew) / math.log(lb / la))


def predict_stage(work: FitWork, stage: list[int], last: list[int], before: list[int] | None, r: float) -> None:
    """Starts each probe of ``stage`` from its label set's probe of the ``last`` stage, moved
    ``r`` times the step from the stage ``before`` it."""
    lay = work.layout
    for j, (k_new, k_a) in enumerate(zip(stage, last)):
        w, b = work.weight[:, lay.columns(k_a)], work.bias[lay.columns(k_a)]
        if r > 0:
            old = lay.columns(before[j])
            w, b = w + r * (w - work.weight[:, old]), b + r * (b - work.bias[old])
        work.weight[:, lay.columns(k_new)] = w
        work.bias[lay.columns(k_new)] = b


def fit_path(work: FitWork, x: torch.Tensor, labels: torch.Tensor, l2_values: list[float], options) -> None:
    """Fits the penalties from the largest (best conditioned) down, each stage (one probe per
    label set) started from a prediction of its solution off the stages before it."""
    order = sorted(range(len(l2_values)), key=lambda i: -l2_values[i])
    done: list[int] = []
    stages: list[list[int]] = []
    for i in order:
        stage = work.layout.stage(i, len(l2_values))
        if stages:
            predict_stage(work, stage, stages[-1], stages[-2] if len(stages) > 1 else None,
                          secant_ratio(l2_values, done, i))
        work.run(x, labels, stage, options)
        done.append(i)
        stages.append(stage)
