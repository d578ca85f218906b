"""Bad input gets a ValueError/TypeError naming the argument, never a crash or a silent number."""
import pytest
import torch

import uinfo_fast as uf

X = torch.randn(40, 5)
Y = torch.randint(0, 3, (40,))


@pytest.mark.parametrize("features,labels,kwargs,exc,match", [
    (X.clone().index_fill_(0, torch.tensor([3]), float("nan")), Y, {}, ValueError, "features contains NaN or Inf"),
    (X.clone().index_fill_(0, torch.tensor([3]), float("inf")), Y, {}, ValueError, "features contains NaN or Inf"),
    (X, Y + 5, {"num_classes": 3}, ValueError, r"labels\['label'\] must lie in \[0, 3\)"),
    (X, Y - 1, {}, ValueError, r"must lie in"),
    (X, torch.zeros(40, dtype=torch.int64), {}, ValueError, "at least 2 classes"),
    (X, Y, {"num_classes": 1}, ValueError, "must lie in|at least 2 classes"),
    (X, Y[:30], {}, ValueError, "has 30 rows but the features have 40"),
    (X.int(), Y, {}, TypeError, "features must be float32"),
    (X, Y.float(), {}, TypeError, "must be int64"),
    (X[None], Y, {}, ValueError, r"features must be 2-D"),
    (X, Y[:, None, None], {}, ValueError, "must be 1-D"),
    (X.numpy(), Y, {}, TypeError, "features must be a torch.Tensor"),
    (torch.empty(0, 5), torch.empty(0, dtype=torch.int64), {}, ValueError, "features is empty"),
    (X, {}, {}, ValueError, "labels is empty"),
    (X, Y, {"l2": []}, ValueError, "l2 is empty"),
    (X, Y, {"l2": [-1.0]}, ValueError, "l2 values must be finite and >= 0"),
    (X, Y.to("meta"), {}, ValueError, "is on meta but the features are on cpu"),
    (X, Y, {"schedule": "fast"}, ValueError, "schedule must be"),
])
def test_fit_probes_rejects(features, labels, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        uf.fit_probes(features, labels, **kwargs)


def test_estimator_rejects_mismatched_sets():
    with pytest.raises(ValueError, match="name different feature sets"):
        uf.estimate_usable_information({"a": X}, Y, {"b": X}, Y)
    with pytest.raises(ValueError, match="name different label sets"):
        uf.estimate_usable_information(X, {"a": Y}, X, {"b": Y})
    with pytest.raises(ValueError, match="has 4 columns"):
        uf.estimate_usable_information(X, Y, X[:, :4], Y)
    with pytest.raises(ValueError, match=r"test_labels\['label'\] must lie in \[0, 3\)"):
        uf.estimate_usable_information(X, Y, X, Y + 1, num_classes=3)
    with pytest.raises(ValueError, match="val_fraction"):
        uf.estimate_usable_information(X, Y, X, Y, val_fraction=1.5)


def test_ops_reject_bad_arguments_directly():
    from uinfo_fast.engine.extension import ops
    off, col = torch.tensor([0, 3]), torch.tensor([0])
    w, b, l2 = torch.zeros(5, 3), torch.zeros(3), torch.tensor([0.1])
    with pytest.raises(ValueError, match=r"labels\[:, 0\] must lie in \[0, 3\)"):
        ops.fit_probes([X], (Y + 3)[:, None], [w], [b], [off], [col], [l2], 10, 1e-5, 5, 5)
    with pytest.raises(TypeError, match=r"weight and bias must be Float \(or Double\)"):
        ops.probe_objective(X, Y[:, None], w.half(), b.half(), off, col, l2)
    with pytest.raises(TypeError, match="of one dtype"):
        ops.probe_objective(X, Y[:, None], w.double(), b, off, col, l2)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        ops.probe_objective(X / 0, Y[:, None], w, b, off, col, l2)
    with pytest.raises(ValueError, match="probe_offsets must start at 0 and end at C"):
        ops.probe_objective(X, Y[:, None], w, b, torch.tensor([0, 2]), col, l2)
    with pytest.raises(ValueError, match="l2 penalties must be finite and >= 0"):
        ops.probe_objective(X, Y[:, None], w, b, off, col, torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="tol must be > 0"):
        ops.fit_probes([X], Y[:, None], [w], [b], [off], [col], [l2], 10, 0.0, 5, 5)
    with pytest.raises(ValueError, match="one x, weight, bias, probe_offsets, probe_label_col and l2 per feature set"):
        ops.fit_probes([X, X], Y[:, None], [w], [b], [off], [col], [l2], 10, 1e-5, 5, 5)


def test_cuda_tensor_on_cpu_only_build_is_a_clear_error(monkeypatch):
    from uinfo_fast.engine import extension as _ops
    monkeypatch.setattr(_ops, "cuda_kernels_built", lambda: False)
    with pytest.raises(RuntimeError, match="built without its CUDA kernels"):
        _ops.require_device_support(torch.device("cuda"))


def test_ops_skip_the_value_checks_only_when_asked():
    from uinfo_fast.engine.extension import ops
    off, col = torch.tensor([0, 3]), torch.tensor([0])
    w, b, l2 = torch.zeros(5, 3), torch.zeros(3), torch.tensor([0.1])
    bad = X.clone()
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        ops.probe_objective(bad, Y[:, None], w, b, off, col, l2)
    f, _, _ = ops.probe_objective(bad, Y[:, None], w, b, off, col, l2, False)  # the caller vouched for x
    assert not torch.isfinite(f).all()
    with pytest.raises(ValueError, match="must lie in"):
        ops.probe_log_likelihood(X, (Y + 3)[:, None], w, b, off, col)
    with pytest.raises(ValueError, match="probe_offsets must start at 0"):  # structure is always checked
        ops.probe_log_likelihood(X, Y[:, None], w, b, torch.tensor([0, 2]), col, False)


def test_an_estimate_checks_each_label_set_once_and_the_ops_check_nothing_again(monkeypatch):
    from uinfo_fast.engine import extension, fit, labels, path

    range_checks, op_checks = [], []
    real = labels.check_labels

    def counting(y, name, *args, **kw):
        if len(args) > 2 and args[2] is not None:
            range_checks.append(name)
        return real(y, name, *args, **kw)

    class Ops:
        def __getattr__(self, op):
            def call(*args, **kw):
                op_checks.append(kw.get("check_inputs", args[-1] if isinstance(args[-1], bool) else True))
                return getattr(extension.ops, op)(*args, **kw)
            return call

    monkeypatch.setattr(labels, "check_labels", counting)
    monkeypatch.setattr(path, "ops", Ops())
    monkeypatch.setattr(fit, "ops", Ops())
    y2 = {"a": Y, "b": Y % 2}
    uf.estimate_usable_information({"f1": X, "f2": X[:, :3]}, y2, {"f1": X, "f2": X[:, :3]}, y2, n_bootstrap=0,
                                   l2_grid=[1e-3, 1e-1])
    assert sorted(range_checks) == sorted(f"{s}['{n}']" for s in ("labels", "test_labels") for n in ("a", "b"))
    assert op_checks and not any(op_checks)
