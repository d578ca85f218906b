"""One measurement, one engine call: all feature sets in one fit, scoring on the device, and a
measurement that never stops training."""
from dataclasses import replace

import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.engine import extension, path


def _layers(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 6, (n,), generator=g)
    means = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    base = means[y] + torch.randn(n, 12, generator=g)
    feats = {"narrow": base[:, :4].contiguous(), "wide": torch.cat([base, torch.randn(n, 8, generator=g)], 1)}
    return feats, {"six": y, "pair": y % 2}


class _CountingOps:
    """Stands in for torch.ops.uinfo_fast and counts the fit_probes calls."""

    def __init__(self):
        self.fits = []

    def __getattr__(self, op):
        real = getattr(extension.ops, op)
        if op != "fit_probes":
            return real

        def call(x, *args, **kw):
            self.fits.append(len(x))
            return real(x, *args, **kw)
        return call


@pytest.fixture
def counting(monkeypatch):
    ops = _CountingOps()
    monkeypatch.setattr(path, "ops", ops)
    return ops


@pytest.mark.parametrize("warm", [False, True])
def test_one_call_for_every_feature_set_equals_one_call_per_set(device, warm):
    (x, y), (xv, yv), (xt, yt) = _layers(400, 0), _layers(150, 1), _layers(200, 2)
    to = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    kw = dict(l2_grid=[1e-3, 1e-2, 1e-1], n_bootstrap=50, val_features=to(xv), val_labels=to(yv))
    earlier = uf.estimate_usable_information(to({k: v + 0.1 for k, v in x.items()}), to(y), to(xt), to(yt), **kw)
    start = earlier if warm else None
    joint = uf.estimate_usable_information(to(x), to(y), to(xt), to(yt), warm_start=start, **kw)
    for name in x:
        alone = uf.estimate_usable_information({name: x[name].to(device)}, to(y), {name: xt[name].to(device)}, to(yt),
                                               warm_start=start, **{**kw, "val_features": {name: xv[name].to(device)}})
        for a, b in zip(alone.results, [r for r in joint.results if r.feature_set == name]):
            assert (a.l2, a.bits, a.ci_low, a.ci_high, a.test_ce_nats) == (b.l2, b.bits, b.ci_low, b.ci_high, b.test_ce_nats)
        torch.testing.assert_close(alone.fits[name].weight, joint.fits[name].weight, rtol=0, atol=0)


def test_a_measurement_fits_every_layer_in_one_call_and_polishes_there_once_settled(counting):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 6))
    (x, y), (xt, yt) = _layers(300, 0), _layers(200, 1)
    tracker = uf.UsableInfoTracker(model, ["0", "1", "2", "3"], x["wide"][:, :12], y, xt["wide"][:, :12], yt,
                                   l2_grid=[1e-3, 1e-2, 1e-1], n_bootstrap=20)
    tracker.measure(0)  # cold: the whole penalty path of every layer in one call
    cold = list(counting.fits)
    counting.fits.clear()
    tracker.measure(1)
    # then one per decade the grid is widened by and at most one more, for the finalists that
    # need polishing, each of every layer at once
    from uinfo_fast.engine.grid import GRID_EXTENSION
    assert cold[:1] == [4] and len(cold) <= 1 + GRID_EXTENSION + 1
    assert counting.fits[:1] == [4] and len(counting.fits) <= 1 + GRID_EXTENSION + 1  # warm: the grid in one call


def test_a_warm_estimate_polishes_the_last_finalists_in_its_fit_call(counting):
    """The finalists of a warm start's measurement are polished in the fit's own op call: one call
    in all where a polish call of its own would make two, and the same numbers."""
    (x, y), (xv, yv), (xt, yt) = _layers(400, 0), _layers(150, 1), _layers(200, 2)
    kw = dict(l2_grid=[1e-3, 1e-2, 1e-1], n_bootstrap=20, val_features=xv, val_labels=yv)
    g = torch.Generator().manual_seed(9)
    moved = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in x.items()}
    earlier = uf.estimate_usable_information(moved, y, xt, yt, **kw)
    assert set(earlier.finalists) == set(x)
    counting.fits.clear()
    together = uf.estimate_usable_information(x, y, xt, yt, warm_start=earlier, **kw)
    one_call = list(counting.fits)
    counting.fits.clear()
    apart = uf.estimate_usable_information(x, y, xt, yt, warm_start=replace(earlier, finalists={}), **kw)
    assert one_call == [len(x)] and len(counting.fits) == 2 and counting.fits[0] == len(x)
    for a, b in zip(together.results, apart.results):
        assert a.l2 == b.l2 and abs(a.bits - b.bits) < 1e-4, (a.feature_set, a.label_set, a.bits, b.bits)


class _Broken(nn.Module):
    """A layer that passes its input through, or returns NaNs or zeros when told to."""

    def __init__(self):
        super().__init__()
        self.mode = "pass"

    def forward(self, x):
        if self.mode == "nan":
            return x * float("nan")
        return torch.zeros_like(x) if self.mode == "zero" else x


def _tracker_with(broken, labels_train, labels_test, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), broken, nn.Linear(16, 6))
    (x, _), (xt, _) = _layers(300, 0), _layers(200, 1)
    return uf.UsableInfoTracker(model, ["1", "2"], x["wide"][:, :12], labels_train, xt["wide"][:, :12], labels_test,
                                l2_grid=[1e-2, 1e-1], n_bootstrap=0, **kw)


@pytest.mark.parametrize("mode,status", [("nan", "nonfinite_features"), ("zero", "constant_features")])
def test_a_broken_layer_gets_rows_that_say_why_and_the_others_are_measured(tmp_path, mode, status):
    (_, y), (_, yt) = _layers(300, 0), _layers(200, 1)
    broken = _Broken()
    tracker = _tracker_with(broken, y, yt, log_path=tmp_path / "log.jsonl")
    tracker.measure(0)
    broken.mode = mode
    rows = tracker.measure(1)  # no exception: a measurement never stops training
    by = {(r["feature_set"], r["label_set"]): r for r in rows}
    assert {by["2", k]["status"] for k in y} == {status} and all(by["2", k]["bits"] is None for k in y)
    assert all(by["1", k]["status"] == "ok" and by["1", k]["bits"] > 0.1 for k in y)
    broken.mode = "pass"
    again = {(r["feature_set"], r["label_set"]): r for r in tracker.measure(2)}
    assert again["2", "six"]["status"] == "ok"  # recovered: measured again
    from uinfo_fast.tracking import read_log

    assert [r["status"] for r in read_log(tmp_path / "log.jsonl")].count(status) == 2


def test_a_label_set_of_one_class_gets_rows_that_say_so():
    (_, y), (_, yt) = _layers(300, 0), _layers(200, 1)
    y, yt = y["six"], yt["six"]
    one = {"six": y, "same": torch.zeros_like(y)}
    rows = _tracker_with(_Broken(), one, {"six": yt, "same": torch.zeros_like(yt)}).measure(0)
    assert {r["status"] for r in rows if r["label_set"] == "same"} == {"single_class"}
    assert all(r["bits"] > 0.5 for r in rows if r["label_set"] == "six")
    only = _tracker_with(_Broken(), {"same": torch.zeros_like(y)}, {"same": torch.zeros_like(yt)}).measure(0)
    assert [r["status"] for r in only] == ["single_class", "single_class"]


@pytest.mark.slow
def test_a_diverging_run_ends_with_its_own_message(tmp_path, capsys):
    from uinfo_fast.experiments.cli import main
    from uinfo_fast.tracking import read_log

    out = tmp_path / "run"
    assert main(["run", "--n-train", "512", "--n-test", "128", "--width", "4", "--epochs", "3", "--batch-size", "64",
                 "--probe-train", "200", "--probe-val", "28", "--probe-test", "100", "--track-every", "2",
                 "--early-points", "0", "--layers", "layer2,layer4", "--l2-grid", "1e-3,1e-1", "--n-bootstrap", "0",
                 "--quiet", "--lr", "1e6", "--out", str(out)]) == 1
    assert "training diverged at step" in capsys.readouterr().err
    assert "nonfinite_features" in {r["status"] for r in read_log(out / "log.jsonl")}
