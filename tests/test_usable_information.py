"""The estimator: selection, units, pointwise values, bootstrap, warm start, no clamping."""
import math

import pytest
import torch

import uinfo_fast as uf
from uinfo_fast.engine.scoring import TIE_NATS


def _clusters(n, d=16, seed=0, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    proto = torch.randn(8, d, generator=torch.Generator().manual_seed(99)) * 2
    fine = torch.randint(0, 8, (n,), generator=gen)
    x = proto[fine] + noise * torch.randn(n, d, generator=gen)
    return x, {"coarse": fine // 4, "fine": fine}


def test_informative_and_useless_features(device):
    x, y = _clusters(1500)
    xt, yt = _clusters(800, seed=1)
    gen = torch.Generator().manual_seed(7)
    feats = {"signal": x.to(device), "noise": torch.randn(1500, 6, generator=gen).to(device)}
    tfeats = {"signal": xt.to(device), "noise": torch.randn(800, 6, generator=gen).to(device)}
    res = uf.estimate_usable_information(feats, {k: v.to(device) for k, v in y.items()}, tfeats,
                                         {k: v.to(device) for k, v in yt.items()}, n_bootstrap=200)
    fine = res["signal", "fine"]
    assert abs(fine.entropy_bits - 3.0) < 0.05 and fine.bits > 2.5
    assert res["signal", "coarse"].bits > 0.8
    for name in ("coarse", "fine"):
        r = res["noise", name]
        assert abs(r.bits) < 0.05
        assert r.ci_low <= r.bits <= r.ci_high
    # Raw, not clamped: a useless representation may come out below zero.
    assert any(res["noise", n].bits < 0 for n in ("coarse", "fine")) or all(
        res["noise", n].ci_low < 0 for n in ("coarse", "fine"))


def test_bits_are_entropy_minus_test_cross_entropy_and_mean_of_pointwise():
    x, y = _clusters(800, noise=2.0)
    xt, yt = _clusters(400, seed=1, noise=2.0)
    res = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=100)
    for r in res.results:
        assert math.isclose(r.bits, r.entropy_bits - r.test_ce_nats / math.log(2), abs_tol=1e-9)
        assert math.isclose(float(r.pointwise_bits.mean()), r.bits, abs_tol=1e-9)
        assert r.pointwise_bits.shape == (400,)
        # the chosen penalty: at least the largest of those within TIE_NATS of the lowest
        # validation CE (the margin widens to a standard error of the paired difference)
        best = min(r.val_ce_nats.values())
        assert r.l2 >= max(l2 for l2, ce in r.val_ce_nats.items() if ce <= best + TIE_NATS)


def test_warm_start_from_previous_measurement():
    x, y = _clusters(1000, noise=1.5)
    xt, yt = _clusters(400, seed=1, noise=1.5)
    same_grid = dict(n_bootstrap=0, grid_extension=0)  # iterations compared over the same probes
    first = uf.estimate_usable_information(x, y, xt, yt, **same_grid)
    x2 = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    warm = uf.estimate_usable_information(x2, y, xt, yt, warm_start=first, **same_grid)
    cold = uf.estimate_usable_information(x2, y, xt, yt, **same_grid)
    assert int(warm.fits["features"].n_iter.sum()) < int(cold.fits["features"].n_iter.sum()) / 2
    for a, b in zip(warm.results, cold.results):
        assert abs(a.bits - b.bits) < 1e-3


def test_table_and_rows():
    x, y = _clusters(300)
    res = uf.estimate_usable_information(x, y["fine"], x[:100], y["fine"][:100], n_bootstrap=0)
    assert "I_u (bits)" in str(res)
    row = res.rows()[0]
    assert row["feature_set"] == "features" and row["label_set"] == "label"


def test_a_feature_constant_on_the_fit_split_is_ignored_not_blown_up():
    """A dead unit (zero on every train row) that fires on one test row must not wreck the estimate."""
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 3, (600,), generator=gen)
    x = torch.randn(600, 4, generator=gen)
    x[:, 0] += 2.0 * y
    x_test = torch.randn(300, 4, generator=gen)
    yt = torch.randint(0, 3, (300,), generator=gen)
    x_test[:, 0] += 2.0 * yt
    dead, dead_test = torch.cat([x, torch.zeros(600, 1)], 1), torch.cat([x_test, torch.zeros(300, 1)], 1)
    dead_test[7, 4] = 3.0
    # The unit was alive at the previous checkpoint, so the warm start gives it a weight that the
    # fit on the dead unit (zero gradient) barely shrinks.
    alive = torch.cat([x, x[:, :1] + torch.randn(600, 1, generator=gen)], 1)
    alive_test = torch.cat([x_test, x_test[:, :1]], 1)
    prev = uf.estimate_usable_information(alive, y, alive_test, yt, l2_grid=[1e-4, 1e-2], n_bootstrap=0)
    want = uf.estimate_usable_information(x, y, x_test, yt, l2_grid=[1e-4, 1e-2], n_bootstrap=0)
    got = uf.estimate_usable_information(dead, y, dead_test, yt, l2_grid=[1e-4, 1e-2], n_bootstrap=0,
                                         warm_start=prev)
    assert abs(got.results[0].bits - want.results[0].bits) < 1e-3


def test_explicit_validation_set_picks_the_penalty_and_the_fit_uses_every_train_row():
    gen = torch.Generator().manual_seed(9)

    def data(n):
        y = torch.randint(0, 3, (n,), generator=gen)
        x = torch.randn(n, 6, generator=gen)
        x[:, 0] += 1.5 * y
        return x, y

    (x, y), (xv, yv), (xt, yt) = data(400), data(200), data(300)
    res = uf.estimate_usable_information(x, y, xt, yt, val_features=xv, val_labels=yv, l2_grid=[1e-4, 1e-2, 1.0],
                                         n_bootstrap=0)
    r = res.results[0]
    fit = res.fits["features"]
    want = fit.cross_entropy(xv, {"label": yv})
    assert r.val_ce_nats == {l2: float(v) for l2, v in zip(fit.l2, want)}
    assert r.l2 >= min(r.val_ce_nats, key=r.val_ce_nats.get)  # the largest penalty tied with the best
    mean = fit.standardize[0]
    torch.testing.assert_close(mean, x.mean(0))  # standardised on all 400 train rows: nothing carved out
    with pytest.raises(ValueError, match="together"):
        uf.estimate_usable_information(x, y, xt, yt, val_features=xv)
