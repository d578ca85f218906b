"""probe_objective, probe_log_likelihood and fit_probes ops: reference, opcheck, gradients, compile."""
import math

import pytest
import torch

from uinfo_fast.engine import reference
from uinfo_fast.engine.layout import probe_layout

from uinfo_fast.engine.extension import ops

from .conftest import _HAVE_CUDA, random_labels


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
    torch.library.opcheck(ops.fit_probes.default, ([x], labels, [w], [b], [off], [cols], [l2], 20, 1e-6, 5, 5),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    # two feature sets of different widths in one call, the second with its own layout
    x2, w2 = x[:, :2].contiguous() * 2, w[:2].clone()
    torch.library.opcheck(ops.fit_probes.default,
                          ([x, x2], labels, [w, w2], [b, b.clone()], [off, off.clone()], [cols, cols.clone()],
                           [l2, l2 * 3], 20, 1e-6, 5, 5, False),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    torch.library.opcheck(ops.fit_probes.default, ([x], labels, [w], [b], [off], [cols], [l2], 20, 1e-6, 5, 5),
                          {"schedule": "path", "polish": [_meta([1], device)], "polish_l2_tol": 0.1},
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


# ---- The penalty path inside fit_probes, against the same path run as batched calls ----

def _grid_problem(device, class_counts=(3, 5), grid=(1e-1, 1e-2, 1e-3, 1e-4), widths=(9, 4), seed=7):
    """Two feature sets, each with one probe per (label set, penalty) laid out as the estimator
    lays them out, every probe starting at zero."""
    gen = torch.Generator().manual_seed(seed)
    layout = probe_layout(list(class_counts), list(grid))
    n = 300
    labels = random_labels(gen, n, class_counts)
    sets = []
    for d in widths:
        x = torch.randn(n, d, generator=gen, dtype=torch.float64).float()
        zeros = torch.zeros(d, layout.offsets[-1])
        sets.append((x.to(device), zeros.to(device), torch.zeros(layout.offsets[-1], device=device)))
    return labels.to(device), sets, layout


def _secant(l2_b, l2_a, l2_new):
    if not (l2_new > 0 and l2_b > l2_a > l2_new):
        return 0.0
    return min(1.0, math.log(l2_a / l2_new) / math.log(l2_b / l2_a))


def _path_by_batched_calls(x, labels, w, b, layout, **fit):
    """The penalty path run as one batched op call per penalty, the starts predicted here: each
    stage's probes from their label set's probe of the stage before, moved along the secant
    through the two stages before that."""
    w, b, dev = w.clone(), b.clone(), x.device
    values = sorted(set(layout.l2), reverse=True)
    stages = [[k for k in range(layout.n_probes) if layout.l2[k] == v] for v in values]
    out = {f: [None] * layout.n_probes for f in ("objective", "grad_max", "n_iter", "status")}
    cols = lambda k: torch.arange(layout.offsets[k], layout.offsets[k + 1])  # noqa: E731
    for s, stage in enumerate(stages):
        r = _secant(values[s - 2], values[s - 1], values[s]) if s >= 2 else 0.0
        for k in stage if s else []:
            a = next(j for j in stages[s - 1] if layout.label_col[j] == layout.label_col[k])
            start_w, start_b = w[:, cols(a)], b[cols(a)]
            if r > 0:
                c = next(j for j in stages[s - 2] if layout.label_col[j] == layout.label_col[k])
                start_w, start_b = start_w + r * (start_w - w[:, cols(c)]), start_b + r * (start_b - b[cols(c)])
            w[:, cols(k)], b[cols(k)] = start_w, start_b
        sub = torch.cat([cols(k) for k in stage]).to(dev)
        offsets = [0]
        for k in stage:
            offsets.append(offsets[-1] + layout.offsets[k + 1] - layout.offsets[k])
        res = ops.fit_probes([x], labels, [w[:, sub].contiguous()], [b[sub].contiguous()], [_meta(offsets, dev)],
                             [_meta([layout.label_col[k] for k in stage], dev)],
                             [torch.tensor([layout.l2[k] for k in stage], dtype=torch.float64, device=dev)], **fit)
        w[:, sub], b[sub] = res[0][0], res[1][0]
        for j, k in enumerate(stage):
            for f, r_ in zip(out, res[2:]):
                out[f][k] = r_[0][j]
    return w, b, {f: torch.stack(v) for f, v in out.items()}


def test_path_schedule_fits_the_stages_of_batched_calls(device):
    """schedule="path" does inside one op call what a caller could do with one batched call per
    penalty: the same starts, the same iterations, the same solutions, for every feature set of
    the call."""
    labels, sets, layout = _grid_problem(device)
    fit = dict(max_iter=200, tol=1e-6, history=5, check_every=1)
    res = ops.fit_probes([x for x, _, _ in sets], labels, [w for _, w, _ in sets], [b for _, _, b in sets],
                         [_meta(layout.offsets, device)] * 2, [_meta(layout.label_col, device)] * 2,
                         [torch.tensor(layout.l2, dtype=torch.float64, device=device)] * 2, schedule="path", **fit)
    for s, (x, w, b) in enumerate(sets):
        want_w, want_b, want = _path_by_batched_calls(x, labels, w, b, layout, **fit)
        torch.testing.assert_close(res[0][s], want_w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res[1][s], want_b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res[2][s], want["objective"], rtol=1e-10, atol=1e-12)
        assert res[4][s].tolist() == want["n_iter"].tolist()
        assert res[5][s].tolist() == want["status"].tolist()
    # the path starts each stage near its solution: fewer iterations than fitting all from zero
    batched = ops.fit_probes([sets[0][0]], labels, [sets[0][1]], [sets[0][2]], [_meta(layout.offsets, device)],
                             [_meta(layout.label_col, device)],
                             [torch.tensor(layout.l2, dtype=torch.float64, device=device)], **fit)
    assert int(res[4][0].sum()) < int(batched[4][0].sum())


def test_polish_in_the_fit_call_is_a_float64_call_after_it(device):
    """polish=[...] fits the listed probes on in float64 inside the fit's call, as a second call
    in float64 would, and adds their iterations; a listed probe already at its polish tolerance
    is left as it is."""
    labels, sets, layout = _grid_problem(device, grid=(1e-1, 1e-3, 1e-5))
    x, w, b = sets[0]
    fit = dict(max_iter=300, tol=1e-4, history=5, check_every=1)
    args = ([x], labels, [w], [b], [_meta(layout.offsets, device)], [_meta(layout.label_col, device)],
            [torch.tensor(layout.l2, dtype=torch.float64, device=device)])
    listed = [0, 2, 5]
    together = ops.fit_probes(*args, polish=[_meta(listed, device)], polish_l2_tol=0.1, **fit)
    first = ops.fit_probes(*args, **fit)
    sub = torch.cat([torch.arange(layout.offsets[k], layout.offsets[k + 1]) for k in listed]).to(device)
    offsets = [0]
    for k in listed:
        offsets.append(offsets[-1] + layout.offsets[k + 1] - layout.offsets[k])
    second = ops.fit_probes([x], labels, [first[0][0][:, sub].double()], [first[1][0][sub].double()],
                            [_meta(offsets, device)], [_meta([layout.label_col[k] for k in listed], device)],
                            [torch.tensor([layout.l2[k] for k in listed], dtype=torch.float64, device=device)],
                            l2_tol=0.1, **fit)
    torch.testing.assert_close(together[0][0][:, sub], second[0][0].float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together[2][0][listed], second[2][0], rtol=1e-7, atol=0)
    assert together[4][0][listed].tolist() == (first[4][0][listed] + second[4][0]).tolist()
    rest = [k for k in range(layout.n_probes) if k not in listed]
    torch.testing.assert_close(together[0][0][:, torch.cat([torch.arange(layout.offsets[k], layout.offsets[k + 1])
                                                           for k in rest]).to(device)],
                               first[0][0][:, torch.cat([torch.arange(layout.offsets[k], layout.offsets[k + 1])
                                                         for k in rest]).to(device)], rtol=0, atol=0)
    assert int(second[4][0].sum()) > 0  # the polish had work to do
    with pytest.raises(ValueError, match=r"polish\[0\] lists probe 9 of a set of 6"):
        ops.fit_probes(*args, polish=[_meta([9], device)], **fit)


def test_fit_probes_names_an_unknown_schedule(device):
    labels, sets, layout = _grid_problem(device)
    x, w, b = sets[0]
    with pytest.raises(ValueError, match="schedule must be 'batched' or 'path', got 'cold'"):
        ops.fit_probes([x], labels, [w], [b], [_meta(layout.offsets, device)], [_meta(layout.label_col, device)],
                       [torch.tensor(layout.l2, dtype=torch.float64, device=device)], 10, 1e-6, 5, 1, schedule="cold")


def test_ops_trace_under_torch_compile(device):
    args, _ = _problem(device, n=64, d=6, class_counts=(4, 2))
    x, labels, w, b, off, cols, l2 = args

    def objective_and_ll(w, b):
        f, _, _ = ops.probe_objective(x, labels, w, b, off, cols, l2)
        return f, ops.probe_log_likelihood(x, labels, w, b, off, cols)

    compiled = torch.compile(objective_and_ll, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(w, b), objective_and_ll(w, b)):
        torch.testing.assert_close(got, want)


# ---- The fused CUDA pass (csrc/cuda/fused_pass_cuda.cu) against the chunked pass and the reference ----
#
# UINFO_FAST_PASS picks the CUDA pass: "fused" (default) or "chunked". The CPU has one pass and
# ignores the choice, so on CPU these tests run that pass twice; the variable is still validated
# on every device, so a misspelt value fails everywhere.

# 3 + 20 + 100 + 128 + 7 = 258 columns: one 128-class probe fills a tile exactly, 100 + 20 + 7
# share a second, the 3-class probe opens a third (first-fit decreasing).
_PASS_CLASSES = (3, 20, 100, 128, 7)


def _pass_problem(device, xdtype, n, d, class_counts, seed):
    """probe_objective arguments (float32 parameters) and the float64 reference inputs: the
    features as the kernel sees them (rounded to xdtype), the float32 parameters widened."""
    gen = torch.Generator().manual_seed(seed)
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    cols = list(range(len(class_counts)))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64).to(xdtype)
    labels = random_labels(gen, n, class_counts)
    w = (torch.randn(d, offsets[-1], generator=gen, dtype=torch.float64) / d ** 0.5).float()
    b = (0.3 * torch.randn(offsets[-1], generator=gen, dtype=torch.float64)).float()
    l2 = torch.rand(len(class_counts), generator=gen, dtype=torch.float64) * 0.1
    args = (x.to(device), labels.to(device), w.to(device), b.to(device), _meta(offsets, device), _meta(cols, device),
            l2.to(device))
    return args, (x.double(), labels, w.double(), b.double(), offsets, cols, l2)


def _reference_objective(ref):
    x, labels, w, b, offsets, cols, l2 = ref
    wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    f = reference.objective(x, labels, wr, br, offsets, cols, l2)
    f.sum().backward()
    return f.detach(), wr.grad, br.grad


def _rel_err(got, want):
    """Norm-wise relative error: float32 rounding is relative to the whole gradient, and single
    entries of a mean gradient can be near zero."""
    return float((got.detach().cpu().double() - want).norm() / want.norm())


@pytest.mark.parametrize("pass_kind", ["fused", "chunked"])
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
# N not a multiple of the 128-row tile; D = 37 not a multiple of 4 (scalar loads), 64 (vector
# loads), 130 (two feature chunks of the gradient product, the second with 2 features); N = 129
# leaves one row in the second row tile.
@pytest.mark.parametrize("n,d", [(1000, 37), (300, 64), (129, 130)])
def test_pass_variants_match_reference(device, monkeypatch, pass_kind, xdtype, n, d):
    monkeypatch.setenv("UINFO_FAST_PASS", pass_kind)
    args, ref = _pass_problem(device, xdtype, n, d, _PASS_CLASSES, seed=n + d)
    f, gw, gb = ops.probe_objective(*args)
    fr, gwr, gbr = _reference_objective(ref)
    assert float(((f.cpu().double() - fr).abs() / fr.abs()).max()) < 1e-5
    assert _rel_err(gw, gwr) < 1e-5
    assert _rel_err(gb, gbr) < 1e-5


@pytest.mark.parametrize("pass_kind", ["fused", "chunked"])
def test_pass_with_a_probe_wider_than_a_tile(device, monkeypatch, pass_kind):
    """A 200-class probe does not fit a 128-slot tile: the whole pass falls back to chunks."""
    monkeypatch.setenv("UINFO_FAST_PASS", pass_kind)
    args, ref = _pass_problem(device, torch.float32, 500, 21, (200, 5, 3), seed=3)
    f, gw, gb = ops.probe_objective(*args)
    fr, gwr, gbr = _reference_objective(ref)
    assert float(((f.cpu().double() - fr).abs() / fr.abs()).max()) < 1e-5
    assert _rel_err(gw, gwr) < 1e-5
    assert _rel_err(gb, gbr) < 1e-5


def test_pass_rejects_an_unknown_pass_variable(device, monkeypatch):
    # Validated on every device (see above), so this holds on CPU too.
    args, _ = _pass_problem(device, torch.float32, 50, 5, (3, 2), seed=4)
    monkeypatch.setenv("UINFO_FAST_PASS", "fast")
    with pytest.raises(ValueError, match="UINFO_FAST_PASS"):
        ops.probe_objective(*args)


@pytest.mark.skipif(not _HAVE_CUDA, reason="needs a GPU and the CUDA kernels")
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_and_chunked_passes_agree(monkeypatch, xdtype):
    """Many tiles, blocks that walk several row tiles, D across two gradient chunks."""
    gen = torch.Generator().manual_seed(5)
    class_counts = tuple(int(c) for c in torch.randint(2, 129, (40,), generator=gen))
    args, _ = _pass_problem(torch.device("cuda"), xdtype, 20000, 131, class_counts, seed=6)
    out = {}
    for kind in ("chunked", "fused"):
        monkeypatch.setenv("UINFO_FAST_PASS", kind)
        out[kind] = [t.double().cpu() for t in ops.probe_objective(*args)]
    (f_c, gw_c, gb_c), (f_f, gw_f, gb_f) = out["chunked"], out["fused"]
    assert float(((f_f - f_c).abs() / f_c.abs()).max()) < 1e-5
    assert float((gw_f - gw_c).norm() / gw_c.norm()) < 1e-5
    assert float((gb_f - gb_c).norm() / gb_c.norm()) < 1e-5
