"""One-hidden-layer probes: the three ops against the reference on both devices, opcheck, the
fit's convergence, determinism and non-convergence flag, and the estimator's rows."""
import pytest
import torch

from uinfo_fast import estimate_usable_information
from uinfo_fast.engine import reference
from uinfo_fast.engine.extension import ops
from uinfo_fast.engine.layout import FitStatus
from uinfo_fast.engine.mlp import fit_mlp_probes

from .conftest import _HAVE_CUDA, random_labels


def _problem(device, dtype=torch.float64, n=97, d=6, h=5, classes=(3, 2, 4), seed=0):
    """x, labels [n, 2], and three probes of different class counts on label columns 0, 1, 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels = random_labels(gen, n, (4, 2))
    labels[:, 0] = labels[:, 0] % 3  # the probe of 3 classes reads column 0 too
    k, c = len(classes), max(classes)
    w1, b1 = torch.randn(k, d, h, generator=gen, dtype=torch.float64), torch.randn(k, h, generator=gen, dtype=torch.float64)
    w2, b2 = torch.randn(k, h, c, generator=gen, dtype=torch.float64), torch.randn(k, c, generator=gen, dtype=torch.float64)
    for i, ci in enumerate(classes):  # the ops hold the columns past a probe's classes at zero
        w2[i, :, ci:] = 0
        b2[i, ci:] = 0
    col, cls = torch.tensor([0, 1, 0]), torch.tensor(classes)
    l2 = torch.tensor([0.1, 0.0, 0.03], dtype=torch.float64)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    on = lambda t: t.to(device)  # noqa: E731
    args = (on(x.to(dtype)), on(labels), *(on(t.to(wdt)) for t in (w1, b1, w2, b2)), on(col), on(cls), on(l2))
    return args, (x.to(dtype).double(), labels, w1, b1, w2, b2, col, cls, l2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_objective_and_gradient_match_reference(device, dtype):
    args, (x, labels, *params, col, cls, l2) = _problem(device, dtype)
    f, *grads = ops.mlp_probe_objective(*args)
    ref = [p.clone().requires_grad_(True) for p in params]
    fr = reference.mlp_objective(x, labels, *ref, col, cls, l2)
    fr.sum().backward()
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(f.cpu(), fr.detach(), rtol=tol, atol=tol)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g.cpu().double(), r.grad, rtol=tol, atol=tol)


def test_log_likelihood_matches_reference(device):
    args, (x, labels, *params, col, cls, _) = _problem(device, seed=1)
    ll = ops.mlp_probe_log_likelihood(*args[:8]).cpu()
    torch.testing.assert_close(ll, -reference.mlp_nll(x, labels, *params, col, cls), rtol=1e-10, atol=1e-10)


def test_opcheck(device):
    args, _ = _problem(device, n=23, d=3, h=2)
    torch.library.opcheck(ops.mlp_probe_objective.default, args)
    torch.library.opcheck(ops.mlp_probe_log_likelihood.default, args[:8])
    x, labels, w1, b1, w2, b2, col, cls, l2 = args
    two_sets = ([x, x[:, :2].contiguous()], labels, [w1, w1[:, :2].clone()], [b1, b1.clone()], [w2, w2.clone()],
                [b2, b2.clone()], [col, col.clone()], [cls, cls.clone()], [l2, l2 * 2], 15, 1e-6, 4, 3)
    torch.library.opcheck(ops.fit_mlp_probes.default, two_sets,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_fit_reaches_tolerance_and_lowers_the_objective(device):
    args, (x, labels, *params, col, cls, l2) = _problem(device, n=200, d=4, h=6)
    l2 = torch.tensor([0.1, 0.05, 0.03], dtype=torch.float64, device=device)
    start = ops.mlp_probe_objective(*args[:8], l2)[0]
    w1, b1, w2, b2, f, gmax, n_iter, status = [t[0] for t in ops.fit_mlp_probes(
        *([t] for t in args[:1]), args[1], *([t] for t in args[2:8]), [l2], 3000, 1e-7, 10, 5)]
    # A ReLU network's objective has kinks where a unit's input crosses 0 at a row: on 200 rows a
    # fit may end flat at one, its one-sided gradient above tol. Both count as converged.
    assert set(status.tolist()) <= {int(FitStatus.GRADIENT), int(FitStatus.FLAT)}, (status, gmax, n_iter)
    assert int(FitStatus.GRADIENT) in status.tolist() and bool((f < start).all())
    # what the fit reports is the objective and gradient of the weights it returns
    f2, *grads = ops.mlp_probe_objective(args[0], args[1], w1, b1, w2, b2, args[6], args[7], l2)
    torch.testing.assert_close(f2, f, rtol=1e-12, atol=1e-12)
    gmax2 = torch.stack([g.abs().flatten(1).amax(1) for g in grads]).amax(0).double()
    torch.testing.assert_close(gmax2, gmax, rtol=1e-9, atol=1e-12)
    # columns past a probe's classes stay zero
    assert float(w2[1, :, 2:].abs().max()) == 0.0 and float(b2[1, 2:].abs().max()) == 0.0


def test_a_probe_fits_as_it_would_alone(device):
    """Probes of 3, 2 and 4 classes side by side (three runs of the softmax layer, each over its
    own columns, and three histories of their own) end where each ends fitted alone."""
    args, _ = _problem(device, n=120, d=4, h=5)
    x, labels, *per_probe = args
    together = [t[0] for t in ops.fit_mlp_probes([x], labels, *([t] for t in per_probe), 40, 1e-9, 5, 1)]
    for k in range(3):
        one = [t.narrow(0, k, 1) for t in per_probe]
        c = int(one[5])  # per_probe: w1, b1, w2, b2, label column, classes, l2
        one[2], one[3] = one[2][..., :c].contiguous(), one[3][..., :c].contiguous()  # as wide as its classes
        alone = [t[0] for t in ops.fit_mlp_probes([x], labels, *([t] for t in one), 40, 1e-9, 5, 1)]
        for name, a, b in zip(("w1", "b1", "w2", "b2", "f", "gmax", "n_iter", "status"), together, alone):
            a = a[k] if name not in ("w2", "b2") else a[k][..., :c]
            torch.testing.assert_close(a, b[0], rtol=1e-9, atol=1e-9, msg=f"probe {k}: {name}")


def _xor(n, seed, d=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    return x, {"xor": ((x[:, 0] * x[:, 1]) > 0).long(), "sign": (x[:, 2] > 0).long()}


def test_a_seed_gives_bit_identical_fits_and_another_seed_another():
    x, y = _xor(300, 0)
    fit = lambda seed: fit_mlp_probes(x, y, [1e-2, 1e-1], hidden=8, restarts=2, seed=seed, max_iter=60)  # noqa: E731
    a, b, c = fit(3), fit(3), fit(4)
    for name in ("w1", "b1", "w2", "b2", "objective"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.w1, c.w1)
    assert a.restart == [0, 1, 0, 1, 0, 1, 0, 1] and a.l2 == [1e-2, 1e-2, 1e-1, 1e-1] * 2


def test_a_probe_stopped_short_is_flagged():
    x, y = _xor(400, 1)
    xt, yt = _xor(300, 2)
    fit = fit_mlp_probes(x, y, 1e-3, hidden=8, max_iter=3)
    assert fit.statuses == [FitStatus.MAX_ITER] * 2 and not bool(fit.converged.any())
    with pytest.warns(UserWarning, match="did not converge"):
        res = estimate_usable_information(x, y, xt, yt, family="mlp", hidden=8, restarts=1, max_iter=3,
                                          l2_grid=(1e-2,), n_bootstrap=20)
    assert {r.status for r in res.results} == {"not_converged"}
    assert all(not r.converged for r in res.results)


def test_the_mlp_reads_what_the_linear_probe_cannot():
    x, y = _xor(1500, 3)
    xt, yt = _xor(1000, 4)
    lin = estimate_usable_information(x, y, xt, yt, l2_grid=(1e-2, 1e-1, 1.0), n_bootstrap=50)
    mlp = estimate_usable_information(x, y, xt, yt, family="mlp", hidden=16, restarts=2, l2_grid=(1e-2, 1e-1, 1.0),
                                      n_bootstrap=50, max_iter=3000)
    assert lin["features", "xor"].bits < 0.02 < 0.6 < mlp["features", "xor"].bits
    assert lin["features", "sign"].bits > 0.8 and mlp["features", "sign"].bits > 0.8  # a linear label: both read it
    row = mlp["features", "xor"].row()
    assert (row["probe_family"], row["probe_hidden"], row["probe_restarts"]) == ("mlp", 16, 2)
    assert lin["features", "xor"].row()["probe_family"] == "linear"
    # the fits keep every restart for the next measurement's warm start
    fit = mlp.fits["features"]
    assert fit.n_probes == 6 and fit.all_restarts.n_probes == 12


def test_a_warm_start_continues_every_restart():
    x, y = _xor(600, 5)
    xt, yt = _xor(300, 6)
    opts = dict(family="mlp", hidden=8, restarts=2, l2_grid=(1e-2, 1e-1), n_bootstrap=10, max_iter=2000)
    cold = estimate_usable_information(x, y, xt, yt, **opts)
    warm = estimate_usable_information(x, y, xt, yt, warm_start=cold, **opts)
    cold_iters = int(cold.fits["features"].all_restarts.n_iter.sum())
    assert int(warm.fits["features"].all_restarts.n_iter.sum()) < cold_iters / 5
    for key in (("features", "xor"), ("features", "sign")):
        assert abs(warm[key].bits - cold[key].bits) < 0.02


@pytest.mark.skipif(not _HAVE_CUDA, reason="needs a GPU and the CUDA kernels")
def test_cuda_fit_follows_the_cpu_fit():
    """The same generic code on both devices: float64 fits from the same start end alike."""
    args, _ = _problem("cpu", n=150, d=4, h=5)
    out = []
    for dev in ("cpu", "cuda"):
        a = [t.to(dev) for t in args]
        res = ops.fit_mlp_probes([a[0]], a[1], *([t] for t in a[2:9]), 200, 1e-9, 10, 1)
        out.append([r[0].cpu() for r in res])
    for c, g in zip(*out):
        torch.testing.assert_close(g.double(), c.double(), rtol=1e-6, atol=1e-6)


def test_a_tracker_measures_with_mlp_probes_warm_from_its_last_measurement(tmp_path):
    from torch import nn

    from uinfo_fast.tracking import Schedule, UsableInfoTracker, read_log

    from .toy import separable

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    xtr, ytr = separable(300, 0)
    xte, yte = separable(200, 1)
    tracker = UsableInfoTracker(model, ["1"], xtr, ytr, xte, yte, log_path=tmp_path / "log.jsonl",
                                schedule=Schedule(every=5), l2_grid=[1e-2, 1e-1], n_bootstrap=20, family="mlp",
                                hidden=8, restarts=2)
    for step in range(6):
        tracker.step(step)
    rows = read_log(tmp_path / "log.jsonl")
    assert {r["step"] for r in rows} == {0, 5}
    assert {(r["probe_family"], r["probe_hidden"], r["probe_restarts"]) for r in rows} == {("mlp", 8, 2)}
    assert all(r["status"] in ("ok", "not_converged") and r["bits"] is not None for r in rows)
    warm = tracker.warm_state().fits["1"]
    assert warm.family == "mlp" and warm.all_restarts.n_probes == 2 * 2 * len(ytr)


def test_a_probe_whose_objective_stopped_falling_has_converged_and_without_ftol_runs_on():
    x, y = _xor(300, 7)
    slow = fit_mlp_probes(x, y["xor"], 1e-3, hidden=8, tol=1e-12, ftol=1e-3, max_iter=2000)
    assert slow.statuses == [FitStatus.SLOW] and bool(slow.converged.all())
    assert 20 < int(slow.n_iter[0]) < 2000
    off = fit_mlp_probes(x, y["xor"], 1e-3, hidden=8, tol=1e-12, ftol=0.0, max_iter=int(slow.n_iter[0]) + 30)
    assert off.statuses != [FitStatus.SLOW]
