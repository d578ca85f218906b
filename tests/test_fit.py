"""fit_probes converges to the penalised optimum of every probe (float64 reference)."""
import pytest
import torch

import uinfo_fast as uf
from uinfo_fast.engine import cuda_kernels_built, reference


def _data(n=600, d=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    fine = (x @ torch.randn(d, 9, generator=gen, dtype=torch.float64)
            + 0.8 * torch.randn(n, 9, generator=gen, dtype=torch.float64)).argmax(1)
    coarse = fine % 3
    return x, {"coarse": coarse, "fine": fine}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("schedule", ["batched", "path"])
def test_objective_within_1e4_of_float64_reference(device, dtype, schedule):
    x, labels = _data()
    grid = [1e-4, 1e-2, 1e-1]
    fit = uf.fit_probes(x.to(dtype).to(device), {k: v.to(device) for k, v in labels.items()}, grid,
                        schedule=schedule, tol=1e-6)
    assert bool(fit.converged.all())
    xr = x.to(dtype).double()  # the reference sees the same (rounded) features
    for k in range(fit.n_probes):
        name = fit.label_names[fit.label_col[k]]
        _, _, f_ref, _ = reference.fit_probe_lbfgs(xr, labels[name], fit.num_classes[fit.label_col[k]], fit.l2[k],
                                                   tol=1e-9)
        rel = abs(float(fit.objective[k]) - f_ref) / abs(f_ref)
        assert rel < 1e-4, (k, float(fit.objective[k]), f_ref)


def test_reported_objective_is_the_objective_of_the_returned_weights(device):
    x, labels = _data(seed=1)
    fit = uf.fit_probes(x.to(device), {k: v.to(device) for k, v in labels.items()}, [1e-3, 1e-1])
    f = reference.objective(x, torch.stack([labels["coarse"], labels["fine"]], 1), fit.weight.cpu(), fit.bias.cpu(),
                            fit.offsets, fit.label_col, fit.l2)
    torch.testing.assert_close(fit.objective.cpu(), f, rtol=1e-12, atol=1e-12)


def test_warm_start_needs_far_fewer_iterations(device):
    x, labels = _data(seed=2)
    x, labels = x.to(device), {k: v.to(device) for k, v in labels.items()}
    cold = uf.fit_probes(x, labels, [1e-4, 1e-2], schedule="batched")
    # The next "checkpoint": slightly moved features, started from the previous solution.
    x2 = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype).to(device)
    warm = uf.fit_probes(x2, labels, [1e-4, 1e-2], init=cold)
    again_cold = uf.fit_probes(x2, labels, [1e-4, 1e-2], schedule="batched")
    assert bool(warm.converged.all())
    assert int(warm.n_iter.sum()) * 2 < int(again_cold.n_iter.sum())
    torch.testing.assert_close(warm.objective, again_cold.objective, rtol=1e-6, atol=1e-8)


def test_max_iter_is_respected_and_reported_unconverged(device):
    x, labels = _data(seed=3)
    fit = uf.fit_probes(x.to(device), {k: v.to(device) for k, v in labels.items()}, 1e-5, max_iter=3, tol=1e-9)
    assert int(fit.n_iter.max()) <= 3
    assert not bool(fit.converged.any())


def test_log_likelihood_and_cross_entropy_agree(device):
    x, labels = _data(seed=4)
    labels = {k: v.to(device) for k, v in labels.items()}
    fit = uf.fit_probes(x.to(device), labels, [1e-2])
    ll = fit.log_likelihood(x.to(device), labels)
    assert ll.shape == (x.shape[0], 2)
    # On its own train data with a small penalty the mean NLL is the objective minus the penalty.
    pen = torch.tensor([0.5 * fit.l2[k] * float(fit.probe(k)[0].double().square().sum()) for k in range(2)])
    torch.testing.assert_close(fit.cross_entropy(x.to(device), labels).cpu(), fit.objective.cpu() - pen,
                               rtol=1e-5, atol=1e-6)


def test_label_sets_are_matched_by_name_not_order():
    x, labels = _data(seed=6)
    fit = uf.fit_probes(x, labels, [1e-2])
    swapped = {"fine": labels["fine"], "coarse": labels["coarse"]}
    torch.testing.assert_close(fit.log_likelihood(x, swapped), fit.log_likelihood(x, labels))
    torch.testing.assert_close(fit.log_likelihood(x, [labels["coarse"], labels["fine"]]), fit.log_likelihood(x, labels))


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("d", [12, 80])  # 80: a probe spans more elements than a CUDA block has threads
def test_fused_update_matches_the_generic_aten_update(monkeypatch, device, dtype, rtol, d):
    """The L-BFGS bookkeeping runs in one fused kernel per iteration (CPU and CUDA);
    UINFO_FAST_GENERIC_LBFGS selects the device-generic ATen formulation. Both must take the same steps."""
    x, labels = _data(n=1500, d=d, seed=2) if d > 12 else _data(seed=2)
    x = x.to(dtype).to(device)
    labels = {k: v.to(device) for k, v in labels.items()}
    grid = [1e-4, 1e-2]

    def fit(generic, **kw):
        if generic:
            monkeypatch.setenv("UINFO_FAST_GENERIC_LBFGS", "1")
        else:
            monkeypatch.delenv("UINFO_FAST_GENERIC_LBFGS", raising=False)
        return uf.fit_probes(x, labels, grid, schedule="batched", **kw)

    for max_iter in (1, 2, 8):  # the first steps: same iterates up to rounding
        a, b = fit(False, max_iter=max_iter), fit(True, max_iter=max_iter)
        torch.testing.assert_close(a.weight, b.weight, rtol=rtol, atol=rtol * float(b.weight.abs().max()))
        torch.testing.assert_close(a.objective, b.objective, rtol=rtol, atol=0)
        assert a.n_iter.tolist() == b.n_iter.tolist()
    a, b = fit(False, tol=1e-7), fit(True, tol=1e-7)  # and the same optimum
    assert bool(a.converged.all()) and bool(b.converged.all())
    torch.testing.assert_close(a.objective, b.objective, rtol=max(rtol, 1e-6), atol=0)


@pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernels_built()), reason="needs a GPU and the CUDA kernels")
@pytest.mark.parametrize("check_every", [10, 20, 7])  # 7: not a multiple of the history, no graphs
def test_cuda_graph_blocks_match_eager_iterations(monkeypatch, check_every):
    """On CUDA with UINFO_FAST_CUDA_GRAPHS=1, blocks of fused iterations between host checks
    replay as one CUDA graph; with 0 (the default) the same kernels are issued one at a time. The CUDA pass and
    update add block partials atomically, so two runs differ in the last bits and the paths
    drift apart slowly: the same early iterates up to rounding, and the same optimum."""
    x, labels = _data(n=1500, d=80, seed=3)
    x = x.float().cuda()
    labels = {k: v.cuda() for k, v in labels.items()}

    def fit(graphs, **kw):
        monkeypatch.setenv("UINFO_FAST_CUDA_GRAPHS", "1" if graphs else "0")
        return uf.fit_probes(x, labels, [1e-5, 1e-3, 1e-1], schedule="batched", check_every=check_every, **kw)

    a, b = fit(True, max_iter=35), fit(False, max_iter=35)  # 35: a partial block at the end runs eagerly
    torch.testing.assert_close(a.objective, b.objective, rtol=1e-4, atol=0)
    a, b = fit(True, tol=1e-7), fit(False, tol=1e-7)  # to the optimum
    assert bool(a.converged.all()) and bool(b.converged.all())
    torch.testing.assert_close(a.objective, b.objective, rtol=2e-5, atol=0)
    assert int(a.n_iter.max()) > 2 * check_every  # several blocks ran (and replayed) as graphs


@pytest.mark.parametrize("grid", [[1e-1, 1e-2, 1e-3, 1e-4], [1e-1, 1e-2, 1e-2, 1e-3], [1e-1, 1e-2, 0.0], [1e-1, 1e-2, 1e-6]])
def test_penalty_path_secant_start_reaches_the_batched_optimum(grid):
    """From the third stage on, the path starts from the secant through the last two solutions in
    log(l2); repeated or zero penalties restart from the last solution, and a wide step in
    log(l2) caps the secant. Every probe still reaches the optimum the batched schedule finds."""
    x, labels = _data(seed=4)
    path = uf.fit_probes(x.float(), labels, grid, schedule="path", tol=1e-6)
    batched = uf.fit_probes(x.float(), labels, grid, schedule="batched", tol=1e-6)
    assert bool(path.converged.all()) and bool(batched.converged.all())
    torch.testing.assert_close(path.objective, batched.objective, rtol=2e-5, atol=1e-7)
