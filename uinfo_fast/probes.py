"""Batched fitting of L2-penalised softmax probes through the uinfo_fast ops."""
from __future__ import annotations

import math

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from ._checks import check_features, check_l2, check_labels, label_sets
from ._ops import ops


@dataclass
class ProbeFit:
    """K softmax probes fitted on one feature matrix, laid side by side as columns.

    Probe k predicts label set ``label_names[label_col[k]]`` with penalty ``l2[k]`` and owns
    columns ``offsets[k]:offsets[k+1]`` of ``weight`` [D, C] and ``bias`` [C].
    """

    weight: torch.Tensor
    bias: torch.Tensor
    offsets: list[int]
    label_col: list[int]
    l2: list[float]
    label_names: list[str]
    num_classes: list[int]
    objective: torch.Tensor  # [K] float64: mean NLL + l2/2 ||W||^2, nats
    grad_max: torch.Tensor  # [K] float64: max |gradient| at the end
    n_iter: torch.Tensor  # [K] int64: L-BFGS iterations per probe
    status: torch.Tensor  # [K] int64: 0 max_iter, 1 gradient <= tol, 2 objective flat, 3 line search failed
    tol: float
    standardize: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n_probes(self) -> int:
        return len(self.label_col)

    @property
    def converged(self) -> torch.Tensor:
        """[K] bool: the gradient reached tol, or the objective stopped moving at working precision."""
        return (self.status == 1) | (self.status == 2)

    def index(self, label_name: str, l2: float) -> int:
        """Index of the probe for (label set, penalty)."""
        for k in range(self.n_probes):
            if self.label_names[self.label_col[k]] == label_name and self.l2[k] == l2:
                return k
        raise KeyError(f"no probe for label set {label_name!r} with l2={l2}")

    def probe(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [D, C_k], bias [C_k]) of probe k."""
        lo, hi = self.offsets[k], self.offsets[k + 1]
        return self.weight[:, lo:hi], self.bias[lo:hi]

    def _prepare(self, features, labels, name: str):
        x = check_features(features, name)
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"{name} has {x.shape[1]} columns but the probes were fitted on {self.weight.shape[0]}")
        if x.device != self.weight.device:
            raise ValueError(f"{name} is on {x.device} but the probes are on {self.weight.device}")
        sets = label_sets(labels, "labels")
        if not isinstance(labels, Mapping) and len(sets) == len(self.label_names):
            # Unnamed label sets (a tensor or a list) are taken in the order the probes were fitted.
            sets = dict(zip(self.label_names, sets.values()))
        missing = [n for n in self.label_names if n not in sets]
        if missing:
            raise ValueError(f"labels lack the label sets {missing} that the probes predict")
        cols = [check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device, c)
                for n, c in zip(self.label_names, self.num_classes)]
        if self.standardize is not None:
            mean, std = self.standardize
            x = (x.to(mean.dtype) - mean) / std
        return x, torch.stack(cols, 1)

    def log_likelihood(self, features: torch.Tensor, labels) -> torch.Tensor:
        """log q_k(y_i | x_i) in nats for every row i and probe k: [M, K]."""
        x, y = self._prepare(features, labels, "features")
        return probe_log_likelihood(x, y, self.weight, self.bias, self.offsets, self.label_col)

    def cross_entropy(self, features: torch.Tensor, labels) -> torch.Tensor:
        """Mean cross-entropy of every probe on (features, labels), nats: [K] float64."""
        return -self.log_likelihood(features, labels).to(torch.float64).mean(0)


def sklearn_C(l2: float, n_rows: int, num_classes: int) -> float:
    """scikit-learn's ``LogisticRegression(C=...)`` that fits the same probe as penalty ``l2``.

    C = 1 / (l2 * N) for three or more classes. With two classes scikit-learn fits one weight
    vector w (binomial loss) where the softmax probe has two columns W = [-w/2, w/2] at the
    optimum, whose penalty l2/2 ||W||^2 = l2/4 ||w||^2 is half of sklearn's: C = 2 / (l2 * N).
    """
    return (2.0 if num_classes == 2 else 1.0) / (l2 * n_rows)


def _meta(values, device):
    return torch.tensor(values, dtype=torch.int64, device=device)


def probe_log_likelihood(x, labels, weight, bias, offsets, label_col) -> torch.Tensor:
    """Raw op access: log-likelihoods [N, K] for probes laid out as in :class:`ProbeFit`."""
    return ops.probe_log_likelihood(x, labels, weight, bias, _meta(offsets, x.device), _meta(label_col, x.device))


def probe_layout(class_counts, l2_values):
    """The probes fit_probes lays out for these label sets and penalties: probe k = (label set j,
    penalty i) with k = j * len(l2_values) + i, owning columns offsets[k]:offsets[k+1].
    Returns (offsets [K+1], label_col [K], l2 per probe [K]) as lists."""
    label_col = [j for j in range(len(class_counts)) for _ in l2_values]
    l2_per_probe = [v for _ in class_counts for v in l2_values]
    offsets = [0]
    for j in label_col:
        offsets.append(offsets[-1] + class_counts[j])
    return offsets, label_col, l2_per_probe


def fit_probes(
    features: torch.Tensor,
    labels,
    l2=1e-4,
    *,
    num_classes=None,
    init: ProbeFit | None = None,
    schedule: str = "auto",
    max_iter: int = 1000,
    tol: float = 1e-5,
    history: int = 10,
    check_every: int | None = None,
) -> ProbeFit:
    """Fit one softmax probe per (label set, penalty) pair on ``features``, all at once.

    Args:
        features: [N, D] float32, bfloat16, float16 or float64 (CPU or CUDA). Arithmetic is
            float32, float64 for float64 features.
        labels: int64 class indices: a tensor [N], [N, L], a list of [N] tensors, or a mapping
            name -> [N] tensor (one entry per label set).
        l2: one penalty or a grid; the objective is mean cross-entropy + l2/2 ||W||^2 (bias not
            penalised), i.e. scikit-learn's LogisticRegression with C = 1 / (l2 * N).
        num_classes: int or one per label set; default: max label + 1.
        init: warm start from an earlier fit with the same label sets and penalties.
        schedule: "batched" fits every probe in one L-BFGS run; "path" fits the penalties from the
            largest down, each warm-started from a secant prediction off the last two (fewer
            passes when starting cold);
            "auto" takes "path" from a cold start and "batched" from a warm one.
        max_iter, tol: L-BFGS stops a probe when max |gradient| <= tol or after max_iter iterations.
        history: L-BFGS memory; check_every: iterations between host checks (early stop, dropping
            finished probes from the pass). Default: every iteration on CPU, where a check costs
            nothing; every 10 on CUDA, where each is a synchronisation.
    """
    x = check_features(features, "features")
    sets = label_sets(labels, "labels")
    names = list(sets)
    if num_classes is None:
        counts = [None] * len(names)
    elif isinstance(num_classes, int):
        counts = [num_classes] * len(names)
    else:
        counts = list(num_classes)
        if len(counts) != len(names):
            raise ValueError(f"num_classes has {len(counts)} entries but there are {len(names)} label sets")
    cols = []
    for j, (n, c) in enumerate(zip(names, counts)):
        y = check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device, c)
        if c is None:
            counts[j] = int(y.max()) + 1
        if counts[j] < 2:
            raise ValueError(f"label set {n!r} needs at least 2 classes, got num_classes={counts[j]}")
        cols.append(y)
    y_all = torch.stack(cols, 1)
    l2_values = check_l2(l2)
    if schedule not in ("auto", "batched", "path"):
        raise ValueError(f"schedule must be 'auto', 'batched' or 'path', got {schedule!r}")
    if schedule == "auto":
        schedule = "batched" if init is not None else "path"

    offsets, label_col, l2_per_probe = probe_layout(counts, l2_values)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    if init is not None:
        if init.offsets != offsets or init.label_col != label_col or init.weight.shape[0] != x.shape[1]:
            raise ValueError("init was fitted with other label sets, class counts, penalties or feature width")
        weight, bias = init.weight.to(device=x.device, dtype=cdt), init.bias.to(device=x.device, dtype=cdt)
    else:
        weight = torch.zeros(x.shape[1], offsets[-1], dtype=cdt, device=x.device)
        bias = torch.zeros(offsets[-1], dtype=cdt, device=x.device)
    if check_every is None:
        check_every = 1 if x.device.type == "cpu" else 10
    opts = dict(max_iter=int(max_iter), tol=float(tol), history=int(history), check_every=int(check_every))

    fit = ProbeFit(weight, bias, offsets, label_col, l2_per_probe, names, counts,
                   torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0), float(tol))
    if schedule == "batched" or len(l2_values) == 1:
        return _run(x, y_all, fit, list(range(len(label_col))), opts)
    # Penalty path: largest penalty first (best conditioned), each stage starting from a
    # prediction of its solution. From the third stage on that is the secant through the last two
    # solutions in log(l2), w_a + r (w_a - w_b), which follows the path's growth of the weights
    # as the penalty falls (on the CPU benchmark it saves about a third of the iterations over
    # restarting from w_a); r is capped at 1 so an uneven grid cannot throw the start far out.
    order = sorted(range(len(l2_values)), key=lambda i: -l2_values[i])
    done = []  # (penalty index, stage) of the stages fitted so far
    for i in order:
        stage = [j * len(l2_values) + i for j in range(len(names))]
        if done:
            ia, prev = done[-1]
            r = 0.0
            if len(done) >= 2:
                ib, before = done[-2]
                la, lb, lnew = l2_values[ia], l2_values[ib], l2_values[i]
                if lnew > 0 and lb > la > lnew:  # a zero or repeated penalty: restart from w_a
                    r = min(1.0, math.log(la / lnew) / math.log(lb / la))
            for j, (k_new, k_a) in enumerate(zip(stage, prev)):
                a, new = slice(offsets[k_a], offsets[k_a + 1]), slice(offsets[k_new], offsets[k_new + 1])
                w, b = fit.weight[:, a], fit.bias[a]
                if r > 0:
                    k_b = before[j]
                    old = slice(offsets[k_b], offsets[k_b + 1])
                    w, b = w + r * (w - fit.weight[:, old]), b + r * (b - fit.bias[old])
                fit.weight[:, new] = w
                fit.bias[new] = b
        fit = _run(x, y_all, fit, stage, opts)
        done.append((i, stage))
    return fit


def _run(x, y_all, fit: ProbeFit, probes: list[int], opts) -> ProbeFit:
    """Runs the fit op on the probes listed (a subset of fit's layout) and merges the result."""
    device = x.device
    col_idx = torch.cat([torch.arange(fit.offsets[k], fit.offsets[k + 1]) for k in probes]).to(device)
    sub_offsets = [0]
    for k in probes:
        sub_offsets.append(sub_offsets[-1] + fit.offsets[k + 1] - fit.offsets[k])
    l2 = torch.tensor([fit.l2[k] for k in probes], dtype=torch.float64, device=device)
    w, b, obj, gmax, n_iter, status = ops.fit_probes(
        x, y_all, fit.weight.index_select(1, col_idx).contiguous(), fit.bias.index_select(0, col_idx).contiguous(),
        _meta(sub_offsets, device), _meta([fit.label_col[k] for k in probes], device), l2,
        opts["max_iter"], opts["tol"], opts["history"], opts["check_every"])
    n = fit.n_probes
    objective = fit.objective if fit.objective.numel() == n else torch.full((n,), float("nan"), dtype=torch.float64, device=device)
    grad_max = fit.grad_max if fit.grad_max.numel() == n else torch.full((n,), float("nan"), dtype=torch.float64, device=device)
    iters = fit.n_iter if fit.n_iter.numel() == n else torch.zeros(n, dtype=torch.int64, device=device)
    stat = fit.status if fit.status.numel() == n else torch.zeros(n, dtype=torch.int64, device=device)
    idx = torch.tensor(probes, device=device)
    weight, bias = fit.weight.clone(), fit.bias.clone()
    weight[:, col_idx] = w
    bias[col_idx] = b
    return replace(fit, weight=weight, bias=bias, objective=objective.index_copy(0, idx, obj),
                   grad_max=grad_max.index_copy(0, idx, gmax), n_iter=iters.index_copy(0, idx, n_iter),
                   status=stat.index_copy(0, idx, status))
