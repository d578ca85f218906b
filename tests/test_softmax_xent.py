"""The device kernel softmax_xent_ against the pure-PyTorch reference."""
import pytest
import torch

from uinfo_fast.engine import reference

from uinfo_fast.engine.extension import ops

from .conftest import random_labels


def _meta(v, device):
    return torch.tensor(v, dtype=torch.int64, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("write_residual", [True, False])
@pytest.mark.parametrize("class_counts", [[2], [20, 100], [3, 37, 5, 64]])
def test_matches_reference(device, dtype, write_residual, class_counts):
    gen = torch.Generator().manual_seed(sum(class_counts))
    rows = 301
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    labels = random_labels(gen, rows, class_counts)
    logits = (4 * torch.randn(rows, offsets[-1], generator=gen, dtype=torch.float64)).to(dtype)
    want_nll, want_out = reference.softmax_xent(logits.double(), labels, offsets, list(range(len(class_counts))),
                                                0.25, write_residual)
    got = logits.clone().to(device)
    nll = ops.softmax_xent_(got, labels.to(device), _meta(offsets, device),
                            _meta(list(range(len(class_counts))), device), 0.25, write_residual)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(nll.cpu().double(), want_nll, rtol=tol, atol=tol)
    torch.testing.assert_close(got.cpu().double(), want_out, rtol=tol, atol=tol)


def test_probes_may_share_a_label_column(device):
    gen = torch.Generator().manual_seed(3)
    labels = random_labels(gen, 50, [4])
    logits = torch.randn(50, 8, generator=gen)
    nll = ops.softmax_xent_(logits.clone().to(device), labels.to(device), _meta([0, 4, 8], device),
                            _meta([0, 0], device), 1.0, False).cpu()
    want, _ = reference.softmax_xent(logits, labels, [0, 4, 8], [0, 0], 1.0, False)
    torch.testing.assert_close(nll, want)


def test_out_of_range_label_gives_nan_not_a_stray_read(device):
    labels = torch.tensor([[0], [5], [-1]], device=device)
    logits = torch.randn(3, 4, device=device)
    nll = ops.softmax_xent_(logits, labels, _meta([0, 4], device), _meta([0], device), 1.0, True).cpu()
    assert torch.isfinite(nll[0]).all() and torch.isnan(nll[1:]).all()


def test_inconsistent_offsets_give_nan(device):
    labels = torch.zeros(2, 1, dtype=torch.int64, device=device)
    logits = torch.randn(2, 4, device=device)
    nll = ops.softmax_xent_(logits, labels, _meta([0, 9], device), _meta([0], device), 1.0, True).cpu()
    assert torch.isnan(nll).all()


def test_argument_errors_name_the_argument():
    labels = torch.zeros(2, 1, dtype=torch.int64)
    with pytest.raises(TypeError, match="logits must be float32 or float64"):
        ops.softmax_xent_(torch.zeros(2, 4, dtype=torch.int32), labels, _meta([0, 4], "cpu"), _meta([0], "cpu"), 1.0, True)
    with pytest.raises(ValueError, match="labels must be"):
        ops.softmax_xent_(torch.zeros(3, 4), labels, _meta([0, 4], "cpu"), _meta([0], "cpu"), 1.0, True)


def test_opcheck(device):
    gen = torch.Generator().manual_seed(0)
    labels = random_labels(gen, 17, [3, 5]).to(device)
    logits = torch.randn(17, 8, generator=gen).to(device)
    torch.library.opcheck(ops.softmax_xent_.default,
                          (logits, labels, _meta([0, 3, 8], device), _meta([0, 1], device), 0.5, True))


@pytest.mark.parametrize("write_residual", [True, False])
@pytest.mark.parametrize("class_counts", [[2], [20, 100], [3, 37, 5, 64]])
def test_scalar_fallback_matches_reference(monkeypatch, write_residual, class_counts):
    """CPUs without AVX2 take the scalar float32 path; UINFO_FAST_NO_AVX2=1 forces it for the call
    (the switch is read at every op call) and the reference test runs again."""
    monkeypatch.setenv("UINFO_FAST_NO_AVX2", "1")
    test_matches_reference(torch.device("cpu"), torch.float32, write_residual, class_counts)
