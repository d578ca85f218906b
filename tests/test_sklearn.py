"""Against scikit-learn's LogisticRegression on real data (the digits set shipped with sklearn)."""
import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import uinfo_fast as uf  # noqa: E402
from uinfo_fast.engine.inputs import validation_split  # noqa: E402


def _digits():
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = torch.tensor(x[perm], dtype=torch.float32), torch.tensor(y[perm])
    labels = {"digit": y, "parity": y % 2}
    return x[:1300], {k: v[:1300] for k, v in labels.items()}, x[1300:], {k: v[1300:] for k, v in labels.items()}


def _sklearn_ce(x_fit, y_fit, x_test, y_test, l2):
    clf = LogisticRegression(C=uf.sklearn_C(l2, len(y_fit), int(y_fit.max()) + 1), max_iter=5000, tol=1e-8)
    clf.fit(x_fit, y_fit)
    p = clf.predict_proba(x_test)
    return float(-np.mean(np.log(p[np.arange(len(y_test)), y_test])))


def test_selected_probe_matches_sklearn_test_cross_entropy(device):
    x, y, xt, yt = _digits()
    res = uf.estimate_usable_information(x.to(device), {k: v.to(device) for k, v in y.items()}, xt.to(device),
                                         {k: v.to(device) for k, v in yt.items()}, n_bootstrap=0)
    fit = res.fits["features"]
    mean, std, lo, hi = (t.cpu().double().numpy() for t in fit.standardize)
    # The same fit split and standardisation the estimator used, and its clipping of the test
    # rows to the range of the fit rows.
    fit_idx, _ = validation_split(len(x), 0.2, 0)
    x_fit = (x[fit_idx].double().numpy() - mean) / std
    x_test = np.clip((xt.double().numpy() - mean) / std, lo, hi)
    for name in ("digit", "parity"):
        r = res["features", name]
        ce = _sklearn_ce(x_fit, y[name][fit_idx].numpy(), x_test, yt[name].numpy(), r.l2)
        assert abs(r.test_ce_nats - ce) < 0.005, (name, r.test_ce_nats, ce)
