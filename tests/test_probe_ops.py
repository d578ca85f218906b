"""probe_objective, probe_log_likelihood and fit_probes ops: reference, opcheck, gradients, compile."""
import pytest
import torch

from uinfo_fast import reference
from uinfo_fast._ops import ops

from .conftest import random_labels


def _meta(v, device):
    return torch.tensor(v, dtype=torch.int64, device=device)


def _problem(device, dtype=torch.float64, n=257, d=13, class_counts=(3, 7, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels = random_labels(gen, n, class_counts)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    w = 0.3 * torch.randn(d, offsets[-1], generator=gen, dtype=torch.float64)
    b = 0.3 * torch.randn(offsets[-1], generator=gen, dtype=torch.float64)
    l2 = torch.rand(len(class_counts), generator=gen, dtype=torch.float64) * 0.1
    args = (x.to(dtype).to(device), labels.to(device), w.to(wdt).to(device), b.to(wdt).to(device),
            _meta(offsets, device), _meta(list(range(len(class_counts))), device), l2.to(device))
    return args, (x, labels, w, b, offsets, list(range(len(class_counts))), l2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_objective_matches_reference(device, dtype):
    args, (x, labels, w, b, offsets, cols, l2) = _problem(device, dtype)
    f, gw, gb = ops.probe_objective(*args)
    # The reference sees the features as the kernel does (bf16 rounded), in float64.
    xr = x.to(dtype).double()
    wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    fr = reference.objective(xr, labels, wr, br, offsets, cols, l2)
    fr.sum().backward()
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(f.cpu().double(), fr.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(gw.cpu().double(), wr.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.cpu().double(), br.grad, rtol=tol, atol=tol)


def test_log_likelihood_matches_reference(device):
    args, (x, labels, w, b, offsets, cols, _) = _problem(device, seed=1)
    ll = ops.probe_log_likelihood(*args[:6]).cpu()
    want, _ = reference.softmax_xent(x @ w + b, labels, offsets, cols, 1.0, False)
    torch.testing.assert_close(ll, -want, rtol=1e-10, atol=1e-10)


def test_objective_gradcheck(device):
    args, _ = _problem(device, n=40, d=5, class_counts=(3, 2))
    x, labels, w, b, off, cols, l2 = args

    def f(w, b):
        return ops.probe_objective(x, labels, w, b, off, cols, l2)[0]

    assert torch.autograd.gradcheck(f, (w.clone().requires_grad_(True), b.clone().requires_grad_(True)))


def test_opcheck_objective_and_log_likelihood(device):
    args, _ = _problem(device, n=31, d=4, class_counts=(2, 3))
    torch.library.opcheck(ops.probe_objective.default, args)
    torch.library.opcheck(ops.probe_log_likelihood.default, args[:6])


def test_opcheck_fit(device):
    args, _ = _problem(device, n=31, d=4, class_counts=(2, 3))
    x, labels, w, b, off, cols, l2 = args
    torch.library.opcheck(ops.fit_probes.default, (x, labels, w, b, off, cols, l2, 20, 1e-6, 5, 5),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_ops_trace_under_torch_compile(device):
    args, _ = _problem(device, n=64, d=6, class_counts=(4, 2))
    x, labels, w, b, off, cols, l2 = args

    def objective_and_ll(w, b):
        f, _, _ = ops.probe_objective(x, labels, w, b, off, cols, l2)
        return f, ops.probe_log_likelihood(x, labels, w, b, off, cols)

    compiled = torch.compile(objective_and_ll, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(w, b), objective_and_ll(w, b)):
        torch.testing.assert_close(got, want)
