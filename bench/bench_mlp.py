"""One-hidden-layer probes: the engine's one op call against the loops a researcher would write,
scikit-learn's ``MLPClassifier(solver="lbfgs")`` and a per-probe ``torch.optim.LBFGS``, on the
same probes, the same starting tolerance and iteration cap, in one run.

    python bench/bench_mlp.py                 # rows in bench/rows/mlp.jsonl
    python bench/bench_mlp.py --n 2000 --max-iter 50   # a quick look
    python bench/bench_mlp.py --digit-run runs/digits_s41   # the fit of one digit measurement

Workload (issue "Usable by which read-out"): 2 feature sets x {20, 100} classes x 6 penalties,
N train rows, D features, H hidden units. The features are two views of one correlated Gaussian
sample (a linear and a ReLU mixing), the 100 classes the argmax of a random ReLU network of it
plus noise, the 20 classes groups of 5 of them. MLPClassifier computes in float64 (its
features' dtype), the engine and the torch loop in float32. Each solver stops a probe at
max |gradient| <= tol or after max_iter iterations; the rows give the time, the iterations and
the mean final objective (so that a faster solver is seen not to stop earlier), and the test
cross-entropy of each solver's probes, each method timed once. Two floor rows time the products
alone (product_floor): what no solver making the engine's evaluations can spend less than.
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import machine_name, record  # noqa: E402

from uinfo_fast.engine import reference  # noqa: E402
from uinfo_fast.engine.mlp import MlpFitOptions, fit_mlp_sets  # noqa: E402

L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SOLVERS = ("engine", "torch", "sklearn")


def workload(n: int, n_test: int, d: int, seed: int = 0):
    """({set: x [n + n_test, d]}, labels [n + n_test, 2]: 100 classes, and their 20 groups)."""
    gen = torch.Generator().manual_seed(seed)
    m = n + n_test
    z = torch.randn(m, d, generator=gen) @ (torch.randn(d, d, generator=gen) / d ** 0.5)
    teacher = torch.relu(z @ torch.randn(d, 128, generator=gen)) @ torch.randn(128, 100, generator=gen)
    fine = (teacher / teacher.std() + 0.5 * torch.randn(m, 100, generator=gen)).argmax(1)
    labels = torch.stack([fine, fine // 5], 1)
    views = {"linear_view": z @ torch.randn(d, d, generator=gen) / d ** 0.5,
             "relu_view": torch.relu(z @ torch.randn(d, d, generator=gen) / d ** 0.5)}
    views = {k: (v - v[:n].mean(0)) / v[:n].std(0) for k, v in views.items()}
    return views, labels


def engine(xs, y, counts, max_iter, tol, hidden):
    fits = fit_mlp_sets(xs, y, ["fine", "coarse"], counts, list(L2_GRID),
                        MlpFitOptions(hidden=hidden, restarts=1, max_iter=max_iter, tol=tol))
    return [(name, f) for name, f in fits.items()]


def engine_test_ce(fits, y, xs_test, y_test) -> float:
    """Mean test cross-entropy over the probes, on the test rows of classes the train rows have."""
    ces = []
    for name, f in fits:
        ll = f.validated_log_likelihood(xs_test[name], y_test).double()
        for k, j in enumerate(f.label_col):
            seen = torch.isin(y_test[:, j], y[:, j])
            ces.append(-float(ll[seen, k].mean()))
    return float(np.mean(ces))


def sklearn_loop(xs, y, xs_test, y_test, max_iter, tol, hidden):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    objectives, iters, ces = [], [], []
    for name, x in xs.items():
        for j in range(y.shape[1]):
            for l2 in L2_GRID:
                clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(hidden,), alpha=l2 * len(x), tol=tol,
                                    max_iter=max_iter, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(x.double().numpy(), y[:, j].numpy())
                objectives.append(clf.loss_)
                iters.append(clf.n_iter_)
                p = clf.predict_proba(xs_test[name].double().numpy())
                yt = y_test[:, j].numpy()
                seen = np.isin(yt, clf.classes_)  # test rows of classes the train rows have
                cols = np.searchsorted(clf.classes_, yt[seen])
                ces.append(-np.mean(np.log(np.clip(p[seen][np.arange(len(cols)), cols], 1e-300, None))))
    return float(np.mean(objectives)), int(np.sum(iters)), float(np.mean(ces))


def torch_loop(xs, y, max_iter, tol, hidden):
    objectives, evals = [], 0
    for x in xs.values():
        for j in range(y.shape[1]):
            for l2 in L2_GRID:
                f, _, e = reference.fit_mlp_lbfgs(x, y[:, j], int(y[:, j].max()) + 1, l2, hidden, max_iter=max_iter,
                                                  tol=tol)
                objectives.append(f)
                evals += e
    return float(np.mean(objectives)), evals


def timed_torch_loop(xs, y, args) -> dict:
    t0 = time.perf_counter()
    obj, evals = torch_loop(xs, y, args.max_iter, args.tol, args.hidden)
    return dict(solver="torch.optim.LBFGS loop (float32, strong Wolfe)", seconds=time.perf_counter() - t0,
                evaluations=evals, mean_objective=obj)


def timed_sklearn_loop(xs, y, xs_test, y_test, args) -> dict:
    t0 = time.perf_counter()
    obj, iters, ce = sklearn_loop(xs, y, xs_test, y_test, args.max_iter, args.tol, args.hidden)
    return dict(solver="MLPClassifier loop (float64)", seconds=time.perf_counter() - t0, iterations=iters,
                mean_objective=obj, test_ce_nats=ce)


def product_floor(xs, counts: list[int], hidden: int, repeats: int = 10) -> tuple[float, float]:
    """Seconds per probe evaluation of the products no solver can skip, timed batched over one
    feature set's probes as the engine runs them (median of `repeats`), divided by their number:
    (the first layer x W1 and its weight gradient x^T dz, 4 N D H FLOPs; those and the second
    layer's three, z W2, z^T g and g W2^T, 6 N H C FLOPs at each probe's class count)."""
    x = next(iter(xs.values()))
    n, k = x.shape[0], len(L2_GRID)
    first = (torch.randn(x.shape[1], k * len(counts) * hidden), torch.randn(n, k * len(counts) * hidden))
    z = torch.randn(k, n, hidden)
    second = [(torch.randn(k, hidden, c), torch.randn(k, n, c)) for c in counts]

    def timed(products) -> float:
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            products()
            times.append(time.perf_counter() - t0)
        return float(np.median(times[1:])) / (k * len(counts))

    def first_layer():
        torch.mm(x, first[0])
        torch.mm(x.t(), first[1])

    def second_layer():
        for w2, g in second:
            torch.bmm(z, w2)
            torch.bmm(z.transpose(1, 2), g)
            torch.bmm(g, w2.transpose(1, 2))

    t_first = timed(first_layer)
    return t_first, t_first + timed(second_layer)


def digit_measurement(run_dir: str) -> list[dict]:
    """The fits of one measurement of a digit run tracked with MLP probes, on the probe inputs
    at its checkpoint: every layer x {coarse, fine} x the estimator's default grid and restarts,
    from a cold start and then warm from that fit (what every later measurement does)."""
    from mlp_stopping import run_features
    from uinfo_fast.engine.estimator import EstimatorOptions
    from uinfo_fast.engine.probe_rows import standardisation, standardise
    feats, labels = run_features(run_dir)
    xs = {name: standardise(f, standardisation(f)).contiguous() for name, f in feats["train"].items()}
    y = torch.stack([labels["train"]["coarse"], labels["train"]["fine"]], 1)
    est = EstimatorOptions(family="mlp")
    args = (["coarse", "fine"], [2, 10], sorted(est.l2_grid), est.mlp_fit)
    rows, init = [], None
    for start in ("cold", "warm"):
        t0 = time.perf_counter()
        fits = fit_mlp_sets(xs, y, *args, inits=init)
        rows.append(dict(solver=f"engine: one digit measurement's fits, {start}", seconds=time.perf_counter() - t0,
                         iterations=int(sum(int(f.n_iter.sum()) for f in fits.values())),
                         longest=max(int(f.n_iter.max()) for f in fits.values()),
                         probes=sum(f.n_probes for f in fits.values()), run=os.path.basename(run_dir.rstrip("/"))))
        print(rows[-1], flush=True)
        init = fits
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="train rows (default: 10000)")
    ap.add_argument("--n-test", type=int, default=5_000, help="test rows (default: 5000)")
    ap.add_argument("--d", type=int, default=256, help="features (default: 256)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (default: 64)")
    ap.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per probe at most (default: 200, "
                                                               "MLPClassifier's)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |gradient| (default: 1e-4, MLPClassifier's)")
    ap.add_argument("--solvers", default=",".join(SOLVERS),
                    help=f"comma-separated, of {', '.join(SOLVERS)} (default: all; speed-ups need the engine)")
    ap.add_argument("--digit-run", metavar="DIR", help="instead: time the fits of one measurement of this finished "
                                                        "digit run (cold, then warm)")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    if args.digit_run:
        rows = digit_measurement(args.digit_run)
        if not args.no_record:
            print("rows ->", record("mlp", rows, torch.device("cpu")))
        return
    solvers = args.solvers.split(",")
    if "engine" not in solvers or not set(solvers) <= set(SOLVERS):
        ap.error(f"--solvers must name the engine and only {', '.join(SOLVERS)}, got {args.solvers!r}")
    views, labels = workload(args.n, args.n_test, args.d)
    xs = {k: v[:args.n].contiguous() for k, v in views.items()}
    xs_test = {k: v[args.n:].contiguous() for k, v in views.items()}
    y, y_test = labels[:args.n], labels[args.n:]
    counts = [100, 20]
    rows = []

    t0 = time.perf_counter()
    fits = engine(xs, y, counts, args.max_iter, args.tol, args.hidden)
    t_engine = time.perf_counter() - t0
    rows.append(dict(solver="engine (one fit_mlp_probes call)", seconds=t_engine,
                     iterations=int(sum(int(f.n_iter.sum()) for _, f in fits)),
                     mean_objective=float(np.mean([float(f.objective.mean()) for _, f in fits])),
                     test_ce_nats=engine_test_ce(fits, y, xs_test, y_test)))
    print(rows[-1], flush=True)
    if "torch" in solvers:
        rows.append(timed_torch_loop(xs, y, args))
        print(rows[-1], flush=True)
    if "sklearn" in solvers:
        rows.append(timed_sklearn_loop(xs, y, xs_test, y_test, args))
        print(rows[-1], flush=True)
    evals = rows[0]["iterations"]  # the engine's: one evaluation an iteration
    for what, per_eval in zip(("first layer and its gradient (4 N D H FLOPs)", "every product (4 N D H + 6 N H C)"),
                              product_floor(xs, counts, args.hidden)):
        rows.append(dict(solver=f"floor: {what} at the engine's evaluations", seconds=per_eval * evals,
                         evaluations=evals, mean_objective=float("nan")))
        print(rows[-1], flush=True)
    for r in rows:
        r["seconds_per_evaluation"] = r["seconds"] / r.get("evaluations", r.get("iterations"))
        r.update(speedup_of_engine=r["seconds"] / t_engine, probes=2 * 2 * len(L2_GRID), n=args.n, d=args.d,
                 hidden=args.hidden, max_iter=args.max_iter, tol=args.tol)
        work = f"iterations {r['iterations']}" if "iterations" in r else f"evaluations {r['evaluations']}"
        print(f"{r['solver']:<48} {r['seconds']:8.1f} s  x{r['speedup_of_engine']:.2f}  {work}  "
              f"{1e3 * r['seconds_per_evaluation']:.2f} ms per probe evaluation  "
              f"mean objective {r['mean_objective']:.4f}  test CE {r.get('test_ce_nats', float('nan')):.4f}")
    if not args.no_record:
        print("rows ->", record("mlp", rows, torch.device("cpu")))


if __name__ == "__main__":
    main()
