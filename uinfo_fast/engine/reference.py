"""Pure-PyTorch reference of the probe maths, used by the tests and as a benchmark baseline.

Nothing here is fast: it is the plain definition the C++ and CUDA kernels are held against.
"""
from __future__ import annotations

import torch


def softmax_xent(logits, labels, offsets, label_col, grad_scale, write_residual):
    """Reference of the softmax_xent_ op; returns (nll [B, K], residual-or-logits [B, C])."""
    out = logits.clone()
    nll = []
    for k in range(len(label_col)):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        seg = logits[:, lo:hi]
        y = labels[:, int(label_col[k])]
        logp = torch.log_softmax(seg, dim=1)
        nll.append(-logp.gather(1, y[:, None])[:, 0])
        if write_residual:
            onehot = torch.nn.functional.one_hot(y, hi - lo).to(logits.dtype)
            out[:, lo:hi] = (logp.exp() - onehot) * grad_scale
    return torch.stack(nll, 1), out


def objective(x, labels, weight, bias, offsets, label_col, l2):
    """Per-probe mean NLL + l2/2 ||W_k||^2, differentiable by autograd: [K]."""
    logits = x.to(weight.dtype) @ weight + bias
    nll, _ = softmax_xent(logits, labels, offsets, label_col, 1.0, False)
    f = []
    for k in range(len(label_col)):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        f.append(nll[:, k].mean() + 0.5 * l2[k] * weight[:, lo:hi].square().sum())
    return torch.stack(f)


def fit_probe_lbfgs(x, y, num_classes, l2, *, dtype=torch.float64, max_iter=1000, tol=1e-7, weight=None, bias=None):
    """One probe with torch.optim.LBFGS (strong Wolfe line search); returns (W, b, objective, n_evals).

    This is the per-probe loop a researcher would write by hand, and the float64 reference.
    """
    x = x.to(dtype)
    w = torch.zeros(x.shape[1], num_classes, dtype=dtype, device=x.device) if weight is None else weight.clone().to(dtype)
    b = torch.zeros(num_classes, dtype=dtype, device=x.device) if bias is None else bias.clone().to(dtype)
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, max_eval=int(max_iter * 1.25), history_size=10,
                            tolerance_grad=tol, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    evals = 0

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        f = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.square().sum()
    return w.detach(), b.detach(), float(f), evals


def mlp_nll(x, labels, w1, b1, w2, b2, label_col, classes):
    """Every row's NLL [N, K] under one-hidden-layer probes laid out as the mlp ops take them
    (probe k uses the first classes[k] columns of its second layer)."""
    out = []
    for k in range(len(label_col)):
        c = int(classes[k])
        logits = torch.relu(x.to(w1.dtype) @ w1[k] + b1[k]) @ w2[k, :, :c] + b2[k, :c]
        y = labels[:, int(label_col[k])]
        out.append(torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    return torch.stack(out, 1)


def mlp_objective(x, labels, w1, b1, w2, b2, label_col, classes, l2):
    """Per-probe mean NLL + l2/2 (||W1_k||^2 + ||W2_k||^2), differentiable by autograd: [K]."""
    nll = mlp_nll(x, labels, w1, b1, w2, b2, label_col, classes)
    return torch.stack([nll[:, k].mean() + 0.5 * l2[k] * (w1[k].square().sum() + w2[k, :, :int(classes[k])].square().sum())
                        for k in range(len(label_col))])


def fit_mlp_lbfgs(x, y, num_classes, l2, hidden, *, seed=0, dtype=torch.float32, max_iter=1000, tol=1e-4):
    """One one-hidden-layer probe with torch.optim.LBFGS (strong Wolfe), started as the engine
    starts its restart 0 of label set 0; returns (objective, max |gradient|, n_evals). The per-probe
    loop a researcher would write by hand: the engine's speed baseline."""
    from .mlp import initial_weights

    w1, b1, w2, b2 = (t[0, ..., :num_classes] if i >= 2 else t[0] for i, t in enumerate(
        initial_weights(x.shape[1], [num_classes], [0], [0], hidden, seed, dtype, x.device)))
    params = [t.clone().requires_grad_(True) for t in (w1, b1, w2, b2)]
    x = x.to(dtype)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, max_eval=int(max_iter * 1.25), history_size=10,
                            tolerance_grad=tol, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    evals = 0

    def loss():
        logits = torch.relu(x @ params[0] + params[1]) @ params[2] + params[3]
        return torch.nn.functional.cross_entropy(logits, y) + 0.5 * l2 * (params[0].square().sum()
                                                                            + params[2].square().sum())

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        f = loss()
        f.backward()
        return f

    opt.step(closure)
    f = loss()
    grads = torch.autograd.grad(f, params)
    return float(f), max(float(g.abs().max()) for g in grads), evals
