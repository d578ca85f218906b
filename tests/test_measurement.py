"""One measurement, one engine call: all feature sets in one fit, scoring on the device, and a
measurement that never stops training."""
import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.engine import extension, fit as fit_module, path


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


def test_a_warm_measurement_fits_every_layer_in_one_call_then_polishes_in_one(counting):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 6))
    (x, y), (xt, yt) = _layers(300, 0), _layers(200, 1)
    tracker = uf.UsableInfoTracker(model, ["0", "1", "2", "3"], x["wide"][:, :12], y, xt["wide"][:, :12], yt,
                                   l2_grid=[1e-3, 1e-2, 1e-1], n_bootstrap=20)
    tracker.measure(0)  # cold: one call per penalty of the path, every layer in each
    cold = list(counting.fits)
    counting.fits.clear()
    tracker.measure(1)
    assert cold == [4, 4, 4, 4] and counting.fits == [4, 4]  # warm: the grid, then the finalists' polish
