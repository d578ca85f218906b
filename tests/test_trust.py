"""Numbers a measurement tool can be trusted with: absent classes, tiny probe sets, bad inputs."""
import math
import re
import warnings

import pytest
import torch
from torch import nn

import uinfo_fast as uf

MU = torch.randn(5, 16, generator=torch.Generator().manual_seed(123)) * 0.5


def _data(seed, n=600):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    return MU[y] + torch.randn(n, 16, generator=g), y


def _estimate(x, y, xt, yt, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0, **kw).results[0]


def test_declared_but_absent_classes_do_not_inflate_usable_information():
    (x, y), (xt, yt) = _data(0), _data(1)
    clean = _estimate(x, y, xt, yt)
    generous = _estimate(x, y, xt, yt, num_classes=1000)
    stray_t = yt.clone()
    stray_t[0] = 999
    stray = _estimate(x, y, xt, stray_t)
    assert abs(clean.entropy_bits - math.log2(5)) < 0.05
    for r in (generous, stray):
        assert abs(r.entropy_bits - clean.entropy_bits) <= 0.01 and abs(r.bits - clean.bits) <= 0.01
        assert r.num_classes == 5 and r.bits <= math.log2(5) + 0.05
    assert (clean.unseen_test_rows, generous.unseen_test_rows, stray.unseen_test_rows) == (0, 0, 1)
    assert "1 test rows of classes absent" in stray.warning and clean.warning is None
    assert stray.pointwise_bits.shape == (599,)


def test_gaps_in_the_label_values_are_classes_that_do_not_exist():
    (x, y), (xt, yt) = _data(0), _data(1)
    values = torch.tensor([0, 7, 20, 300, 999])
    res = uf.estimate_usable_information(x, values[y], xt, values[yt], n_bootstrap=0)
    same = _estimate(x, y, xt, yt)
    assert abs(res.results[0].bits - same.bits) < 1e-9
    fit = res.fits["features"]
    assert fit.num_classes == [5] and fit.classes[0].tolist() == values.tolist()
    # the fit scores original label values, renumbered the way it was fitted
    torch.testing.assert_close(fit.log_likelihood(xt, values[yt]), fit.log_likelihood(xt, [values[yt]]))
    with pytest.raises(ValueError, match="classes the probes were not fitted on"):
        fit.log_likelihood(xt, torch.full_like(yt, 8))


def test_the_tracker_ignores_a_test_label_of_a_class_it_never_trains_on():
    (x, y), (xt, yt) = _data(0, 400), _data(1, 300)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    stray = yt.clone()
    stray[5] = 1000
    bits = []
    for test in (yt, stray):
        tracker = uf.UsableInfoTracker(model, ["1"], x, {"y": y}, xt, {"y": test}, l2_grid=[1e-3, 1e-1], n_bootstrap=0)
        bits.append(tracker.measure(0)[0])
    assert abs(bits[0]["bits"] - bits[1]["bits"]) <= 0.01 and bits[1]["num_classes"] == 5
    assert bits[1]["unseen_test_rows"] == 1 and "absent" in bits[1]["warning"]


def test_few_rows_per_class_are_flagged_in_the_result_the_warning_and_the_log_row(tmp_path):
    g = torch.Generator().manual_seed(4)
    y = torch.arange(40) % 20  # 2 rows per class
    x = torch.randn(40, 8, generator=g) + torch.nn.functional.one_hot(y % 8, 8).float()
    with pytest.warns(UserWarning, match="train rows per class, under 10"):
        r = uf.estimate_usable_information(x, y, x, y, n_bootstrap=0, val_features=x, val_labels=y).results[0]
    assert "train rows per class" in r.warning
    tracker = uf.UsableInfoTracker(nn.Sequential(nn.Identity()), ["0"], x, {"y": y}, x, {"y": y}, val_inputs=x,
                                   val_labels={"y": y}, l2_grid=[1e-2], n_bootstrap=0, log_path=tmp_path / "log.jsonl")
    row = tracker.measure(0)[0]
    assert "train rows per class" in row["warning"]


def test_a_label_set_with_one_class_in_the_train_split_is_an_error():
    x, y = _data(0, 100)
    with pytest.raises(ValueError, match="has 1 class in the train split"):
        uf.estimate_usable_information(x, torch.zeros_like(y), x, y, n_bootstrap=0)


def _tracker(tmp_path, **kw):
    (x, y), (xt, yt) = _data(0, 200), _data(1, 100)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    return uf.UsableInfoTracker(model, ["1"], x, {"y": y}, xt, {"y": yt}, l2_grid=[1e-2], n_bootstrap=0,
                                log_path=tmp_path / "log.jsonl", **kw)


def test_a_step_that_goes_backwards_is_an_error_not_a_duplicated_row(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.measure(10)
    for step in (10, 3):
        with pytest.raises(ValueError, match=f"step {step} is not after step 10"):
            tracker.measure(step)
    # a new tracker on the same log continues after the log's last step
    with pytest.raises(ValueError, match="is not after step 10, the last one measured in"):
        _tracker(tmp_path).measure(0)
    from uinfo_fast.tracking import read_log

    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [10]


def test_an_empty_object_in_the_log_is_an_error_naming_the_line(tmp_path):
    from uinfo_fast.tracking import read_log

    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0, "bits": 1.0}\n{}\n{"step": 1, "bits": 1.0}\n')
    with pytest.raises(ValueError, match="line 2 is not a log row"):
        read_log(path)


def test_features_that_require_grad_are_used_as_data():
    (x, y), (xt, yt) = _data(0, 300), _data(1, 200)
    want = _estimate(x, y, xt, yt)
    got = _estimate(x.clone().requires_grad_(True), y, xt.clone().requires_grad_(True), yt)
    assert got.bits == want.bits
    fit = uf.fit_probes(x.clone().requires_grad_(True), y, 1e-2)
    assert not fit.weight.requires_grad


@pytest.mark.parametrize("labels,kwargs,exc,match", [
    (lambda y: y.tolist(), {}, TypeError, r"labels must be int64 tensors, got a list of int; wrap .*torch.tensor"),
    (lambda y: {"a": y}, {"num_classes": {"b": 5}}, ValueError, r"num_classes has no entry for the label sets \['a'\]"),
])
def test_label_mistakes_get_a_message_that_says_what_to_do(labels, kwargs, exc, match):
    x, y = _data(0, 100)
    with pytest.raises(exc, match=match):
        uf.fit_probes(x, labels(y), **kwargs)


def test_the_estimator_and_fit_probes_read_num_classes_alike():
    (x, y), (xt, yt) = _data(0, 100), _data(1, 100)
    k = int(max(y.max(), yt.max())) + 3
    by_name = uf.estimate_usable_information(x, {"a": y}, xt, {"a": yt}, num_classes={"a": k}, n_bootstrap=0)
    by_order = uf.estimate_usable_information(x, {"a": y}, xt, {"a": yt}, num_classes=[k], n_bootstrap=0)
    assert [r.bits for r in by_name.results] == [r.bits for r in by_order.results]
    with pytest.raises(ValueError, match="num_classes has 2 entries but there are 1 label sets"):
        uf.estimate_usable_information(x, {"a": y}, xt, {"a": yt}, num_classes=[k, k])
    with pytest.raises(ValueError, match="num_classes has 2 entries but there are 1 label sets"):
        uf.fit_probes(x, {"a": y}, num_classes=[k, k])


def test_the_estimator_names_a_missing_num_classes_entry():
    (x, y), (xt, yt) = _data(0, 100), _data(1, 100)
    with pytest.raises(ValueError, match=r"num_classes has no entry for the label sets \['a'\]"):
        uf.estimate_usable_information(x, {"a": y}, xt, {"a": yt}, num_classes={"b": 5})


@pytest.mark.parametrize("option,value,match", [
    ("--epochs", "inf", "epochs must be a finite number > 0, got inf"),
    ("--device", "tpu", "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("--width", "100000", r"width must be an integer in \[1, 1024\], got 100000"),
    ("--momentum", "1.5", r"momentum must be a number in \[0, 1\), got 1.5"),
])
def test_the_cli_refuses_bad_options_in_one_line(tmp_path, capsys, option, value, match):
    from uinfo_fast.experiments.cli import main

    assert main(["run", option, value, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


def _near_separable(seed, n=300, classes=100, d=32):
    """Fine labels with 3 rows per class on average: near separable, the hardest case for a fit."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, d, generator=torch.Generator().manual_seed(77)) * 3.0
    y = torch.randint(0, classes, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g), {"fine": y, "coarse": y // 10}


def test_warm_and_cold_fits_of_the_same_features_agree_at_the_same_penalty():
    (x, y), (xv, yv), (xt, yt) = _near_separable(0), _near_separable(1), _near_separable(2)
    moved = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))  # an earlier checkpoint
    for grid in ([1e-5], [1e-4], [1e-3], [1e-1], [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]):
        kw = dict(n_bootstrap=0, l2_grid=grid, val_features=xv, val_labels=yv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few rows per class, by design
            earlier = uf.estimate_usable_information(moved, y, xt, yt, **kw)
            warm = uf.estimate_usable_information(x, y, xt, yt, warm_start=earlier, **kw)
            cold = uf.estimate_usable_information(x, y, xt, yt, **kw)
        for w, c in zip(warm.results, cold.results):
            assert w.l2 == c.l2 and abs(w.bits - c.bits) <= 0.01, (grid, w, c)


def test_penalties_within_the_tie_margin_choose_the_largest():
    from types import SimpleNamespace

    from uinfo_fast.engine.scoring import TIE_NATS, Validation, choose

    fit = SimpleNamespace(l2=[1e-4, 1e-3, 1e-2, 1e-1], label_names=["y"], probes_of=lambda j: [0, 1, 2, 3])

    def same_on_every_row(means):  # paired differences without spread: the margin is TIE_NATS
        nll = torch.tensor(means, dtype=torch.float64).expand(50, 4)
        return Validation(nll, torch.ones(50, 4, dtype=torch.float64))

    assert choose(fit, same_on_every_row([1.0, 0.9, 0.9 + TIE_NATS / 2, 1.2])).tolist() == [2]
    assert choose(fit, same_on_every_row([1.0, 0.9, 0.9 + 2 * TIE_NATS, 1.2])).tolist() == [1]


def test_penalties_the_validation_rows_cannot_tell_apart_choose_the_largest():
    # one standard error of the paired difference: 0.1 / sqrt(100) = 0.01 nats, above TIE_NATS
    from types import SimpleNamespace

    from uinfo_fast.engine.scoring import Validation, choose

    fit = SimpleNamespace(l2=[1e-3, 1e-1], label_names=["y"], probes_of=lambda j: [0, 1])
    noise = torch.tensor([0.1, -0.1], dtype=torch.float64).repeat(50)
    for gap, chosen in ((0.005, 1), (0.03, 0)):  # within one standard error, and three beyond it
        nll = torch.stack([torch.full((100,), 0.7, dtype=torch.float64), 0.7 + gap + noise], 1)
        val = Validation(nll, torch.ones(100, 2, dtype=torch.float64))
        assert val.margin(torch.tensor([1]), torch.tensor([0])).item() == pytest.approx(0.1 / 100 ** 0.5, rel=0.01)
        assert choose(fit, val).tolist() == [chosen]
