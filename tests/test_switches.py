"""Run-time switches (UINFO_FAST_*): one rule for all of them, read at every op call, validated on
every device. Boolean switches take exactly "0" or "1" (unset or empty: off); UINFO_FAST_PASS takes
"fused" or "chunked" (unset or empty: fused); anything else is a ValueError naming the variable."""
import pytest
import torch

import uinfo_fast as uf  # noqa: F401  (loads the extension and registers its ops)

ops = torch.ops.uinfo_fast

BOOLEAN = ["UINFO_FAST_GENERIC_LBFGS", "UINFO_FAST_NO_AVX2", "UINFO_FAST_CUDA_GRAPHS"]
ALL = BOOLEAN + ["UINFO_FAST_PASS"]


@pytest.fixture(autouse=True)
def _clean_switches(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)


def _problem(seed=0, n=300, d=6, class_counts=(3, 20)):
    gen = torch.Generator().manual_seed(seed)
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    x = torch.randn(n, d, generator=gen)
    labels = torch.stack([torch.randint(0, c, (n,), generator=gen) for c in class_counts], 1)
    w = 0.1 * torch.randn(d, offsets[-1], generator=gen)
    b = 0.1 * torch.randn(offsets[-1], generator=gen)
    off = torch.tensor(offsets, dtype=torch.int64)
    cols = torch.arange(len(class_counts), dtype=torch.int64)
    l2 = torch.tensor([1e-2, 1e-3], dtype=torch.float64)[: len(class_counts)]
    return x, labels, w, b, off, cols, l2


def _call(op):
    """Runs one of the four ops on a small CPU problem; returns its outputs as a tuple."""
    x, labels, w, b, off, cols, l2 = _problem()
    if op == "softmax_xent_":
        logits = torch.addmm(b, x, w)
        nll = ops.softmax_xent_(logits, labels, off, cols, 1.0 / x.shape[0], True)
        return nll, logits
    if op == "probe_objective":
        return tuple(ops.probe_objective(x, labels, w, b, off, cols, l2))
    if op == "probe_log_likelihood":
        return (ops.probe_log_likelihood(x, labels, w, b, off, cols),)
    outs = ops.fit_probes([x], labels, [torch.zeros_like(w)], [torch.zeros_like(b)], [off], [cols], [l2], 15, 1e-6, 10, 1)
    return tuple(o[0] for o in outs)


OPS = ["softmax_xent_", "probe_objective", "probe_log_likelihood", "fit_probes"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", BOOLEAN)
@pytest.mark.parametrize("value", ["yes", "2", "true", " 1"])
def test_boolean_switch_rejects_anything_but_0_and_1(monkeypatch, op, name, value):
    # Validated at every op entry on every device: a CPU run fails too, whatever the switch does.
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be '0' or '1'"):
        _call(op)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("value", ["bogus", "Fused", "1"])
def test_pass_rejects_an_unknown_value_on_cpu(monkeypatch, op, value):
    monkeypatch.setenv("UINFO_FAST_PASS", value)
    with pytest.raises(ValueError, match="UINFO_FAST_PASS must be 'fused' or 'chunked'"):
        _call(op)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name,value", [(n, v) for n in BOOLEAN for v in ("0", "")] +
                         [("UINFO_FAST_PASS", v) for v in ("", "fused", "chunked")])
def test_off_values_and_defaults_change_nothing_on_cpu(monkeypatch, op, name, value):
    """"0" and "" mean off, exactly as unset; the CPU has one pass, so every valid pass value
    gives the same result there."""
    want = _call(op)
    monkeypatch.setenv(name, value)
    got = _call(op)
    for g, w in zip(got, want):
        assert torch.equal(g, w), (name, value)


def test_generic_lbfgs_0_is_the_fused_update_and_1_the_generic_one(monkeypatch):
    fused = _call("fit_probes")
    monkeypatch.setenv("UINFO_FAST_GENERIC_LBFGS", "0")
    off = _call("fit_probes")
    monkeypatch.setenv("UINFO_FAST_GENERIC_LBFGS", "1")
    generic = _call("fit_probes")
    for a, b in zip(off, fused):
        assert torch.equal(a, b)
    # The two updates take the same steps up to rounding.
    torch.testing.assert_close(generic[2], fused[2], rtol=1e-5, atol=0)
    assert generic[4].tolist() == fused[4].tolist()


def _softmax_f32(seed=1):
    gen = torch.Generator().manual_seed(seed)
    counts = (20, 100, 37)
    offsets = torch.tensor([0, 20, 120, 157], dtype=torch.int64)
    labels = torch.stack([torch.randint(0, c, (301,), generator=gen) for c in counts], 1)
    logits = 4 * torch.randn(301, 157, generator=gen)
    nll = ops.softmax_xent_(logits, labels, offsets, torch.arange(3), 0.25, True)
    return nll, logits


def test_no_avx2_switches_on_and_off_within_one_process(monkeypatch):
    """The scalar and AVX2 float32 kernels sum and round differently in the last bits; each call
    takes the path its switch names at that call."""
    default = _softmax_f32()
    monkeypatch.setenv("UINFO_FAST_NO_AVX2", "1")
    scalar = _softmax_f32()
    monkeypatch.setenv("UINFO_FAST_NO_AVX2", "0")
    vector = _softmax_f32()
    monkeypatch.setenv("UINFO_FAST_NO_AVX2", "1")
    scalar_again = _softmax_f32()
    for a, b in zip(vector, default):
        assert torch.equal(a, b)
    for a, b in zip(scalar_again, scalar):
        assert torch.equal(a, b)
    for a, b in zip(scalar, vector):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert not all(torch.equal(a, b) for a, b in zip(scalar, vector)), "UINFO_FAST_NO_AVX2=1 had no effect"
