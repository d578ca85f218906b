"""One-hidden-layer probes against scikit-learn's MLPClassifier (solver="lbfgs") on its digits,
wine and breast-cancer sets, standardised, on fixed splits.

MLPClassifier minimises mean cross-entropy + alpha / (2 N) times the squared weights (biases
unpenalised); the engine's penalty l2 is the same objective at alpha = l2 * N. The engine
chooses its penalty on the validation split; scikit-learn, at that penalty, keeps the best of 5
seeds on the same validation split. The engine's chosen probe must predict the test split as
well, to within 0.02 nats, or better.
"""
import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

import uinfo_fast as uf  # noqa: E402

HIDDEN = 32
SETS = {"digits": datasets.load_digits, "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}


def splits(name: str):
    """(train, val, test) of (x standardised on train, y): 50%, 20%, 30% of a fixed shuffle."""
    x, y = SETS[name](return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = x[perm], y[perm]
    a, b = int(0.5 * len(y)), int(0.7 * len(y))
    mean, std = x[:a].mean(0), x[:a].std(0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def cross_entropy(clf, x, y) -> float:
    p = clf.predict_proba(x)
    cols = np.searchsorted(clf.classes_, y)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), cols], 1e-300, None))))


def sklearn_best_of_5(train, val, test, l2: float) -> float:
    """Test cross-entropy of the MLPClassifier, of 5 seeds, with the lowest validation one."""
    fits = [MLPClassifier(solver="lbfgs", hidden_layer_sizes=(HIDDEN,), alpha=l2 * len(train[1]), random_state=s,
                          max_iter=5000, max_fun=50000, tol=1e-4).fit(*train) for s in range(5)]
    best = min(fits, key=lambda clf: cross_entropy(clf, *val))
    return cross_entropy(best, *test)


@pytest.mark.parametrize("name", list(SETS))
def test_chosen_mlp_probe_predicts_as_well_as_mlpclassifier(name):
    train, val, test = splits(name)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    y = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    res = uf.estimate_usable_information(t(train[0]), y(train[1]), t(test[0]), y(test[1]), val_features=t(val[0]),
                                         val_labels=y(val[1]), family="mlp", hidden=HIDDEN, restarts=3,
                                         max_iter=5000, n_bootstrap=0)
    r = res.results[0]
    assert r.converged
    ours, theirs = r.test_ce_nats, sklearn_best_of_5(train, val, test, r.l2)
    print(f"{name}: l2 {r.l2:g}, engine {ours:.4f} nats, MLPClassifier {theirs:.4f} nats")
    assert ours <= theirs + 0.02
