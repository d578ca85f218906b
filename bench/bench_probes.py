"""End-to-end probe benchmark: fit, select, score usable information, against the baselines.

Workload: 2 label sets (20 coarse and 100 fine classes) x 8 L2 penalties x F feature sets,
N train rows (20% of them the validation split), M test rows, D features. The same data, split,
standardisation, penalties, tolerance and iteration cap go to every method:

  uinfo_fast   estimate_usable_information (all probes of a feature set in one batched op)
  sklearn      LogisticRegression(solver="lbfgs") per probe, C = sklearn_C(l2, N_fit, classes)
  torch_lbfgs  torch.optim.LBFGS (strong Wolfe) per probe, float32, on the same device

Sizes: --size full (N=50,000, M=10,000, D=512, F=4), cpu (N=10,000, M=5,000, D=256, F=2),
tiny (N=2,000, M=1,000, D=64, F=2; a smoke test). Prints a table of wall times, speed-ups and the
selected probes' test cross-entropies; --json writes every number.

    python bench/bench_probes.py --size cpu
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import uinfo_fast as uf
from uinfo_fast.engine.probe_rows import standardisation
from uinfo_fast.engine.inputs import validation_split
from uinfo_fast.engine.reference import fit_probe_lbfgs
from uinfo_fast.tasks import layered_features

from _harness import BENCH_L2_GRID, machine_name, record  # noqa: E402  (bench/, the script's folder)

SIZES = {
    "full": dict(n=50_000, m=10_000, d=512, f=4),
    "cpu": dict(n=10_000, m=5_000, d=256, f=2),
    "tiny": dict(n=2_000, m=1_000, d=64, f=2),
}


def run_uinfo(xtr, ytr, xte, yte, args, device, dtype):
    to = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    xtr_d = {k: v.to(device=device, dtype=dtype) for k, v in xtr.items()}
    xte_d = {k: v.to(device=device, dtype=dtype) for k, v in xte.items()}
    ytr_d, yte_d = to(ytr), to(yte)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":  # warm-up: module load, cuBLAS handles
        uf.estimate_usable_information({k: v[:512] for k, v in xtr_d.items()}, {k: v[:512] for k, v in ytr_d.items()},
                                       {k: v[:256] for k, v in xte_d.items()}, {k: v[:256] for k, v in yte_d.items()},
                                       n_bootstrap=0, max_iter=5)
    sync()
    t0 = time.perf_counter()
    res = uf.estimate_usable_information(xtr_d, ytr_d, xte_d, yte_d, l2_grid=BENCH_L2_GRID, grid_extension=0, n_bootstrap=0,
                                         max_iter=args.max_iter, tol=args.tol,
                                         **({} if args.schedule == "auto" else {"penalty_schedule": args.schedule}))
    sync()
    seconds = time.perf_counter() - t0
    out = {}
    for r in res.results:
        out[(r.feature_set, r.label_set)] = dict(test_ce=r.test_ce_nats, l2=r.l2, converged=r.converged)
    iters = {name: int(fit.n_iter.sum()) for name, fit in res.fits.items()}
    return seconds, out, iters


def standardised_splits(xtr, xte, n_train):
    fit_idx, val_idx = validation_split(n_train, 0.2, 0)
    data = {}
    for name in xtr:
        x = xtr[name].to(torch.float32)
        mean, std = standardisation(x[fit_idx])
        z = lambda t: ((t.to(torch.float32) - mean) / std)  # noqa: E731
        fit = z(x[fit_idx])
        # scored within the fit rows' range, as the estimator scores (probe_rows.with_fit_range)
        lo, hi = fit.amin(0), fit.amax(0)
        data[name] = (fit, z(x[val_idx]).clamp(lo, hi), z(xte[name]).clamp(lo, hi))
    return fit_idx, val_idx, data


def run_per_probe(kind, xtr, ytr, xte, yte, args, device):
    """The per-probe loop a researcher writes by hand: every (feature set, label set, l2) alone."""
    n_train = next(iter(ytr.values())).shape[0]
    fit_idx, val_idx, data = standardised_splits(xtr, xte, n_train)
    jobs = [(f, lab, l2) for f in data for lab in ytr for l2 in BENCH_L2_GRID]
    out, total_iters = {}, 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    val_ce = {}
    test_ce = {}
    for f, lab, l2 in tqdm(jobs, desc=kind, file=sys.stderr, leave=False):
        x_fit, x_val, x_test = data[f]
        y_fit, y_val, y_test = ytr[lab][fit_idx], ytr[lab][val_idx], yte[lab]
        c = int(max(ytr[lab].max(), yte[lab].max())) + 1
        if kind == "sklearn":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=uf.sklearn_C(l2, len(y_fit), c), max_iter=args.max_iter, tol=args.tol)
            clf.fit(x_fit.numpy(), y_fit.numpy())
            total_iters += int(np.max(clf.n_iter_))

            def ce(x, y):
                p = clf.predict_log_proba(x.numpy())
                return float(-np.mean(p[np.arange(len(y)), y.numpy()]))
        else:
            w, b, _, evals = fit_probe_lbfgs(x_fit.to(device), y_fit.to(device), c, l2, dtype=torch.float32,
                                             max_iter=args.max_iter, tol=args.tol)
            total_iters += evals

            def ce(x, y):
                return float(torch.nn.functional.cross_entropy(x.to(device) @ w + b, y.to(device)))
        val_ce[(f, lab, l2)] = ce(x_val, y_val)
        test_ce[(f, lab, l2)] = ce(x_test, y_test)
    sync()
    seconds = time.perf_counter() - t0
    for f in data:
        for lab in ytr:
            best = min(BENCH_L2_GRID, key=lambda l2: val_ce[(f, lab, l2)])
            out[(f, lab)] = dict(test_ce=test_ce[(f, lab, best)], l2=best,
                                 test_ce_by_l2={l2: test_ce[(f, lab, l2)] for l2 in BENCH_L2_GRID})
    return seconds, out, {"all": total_iters}


def _rows(args, results: dict) -> list[dict]:
    """One row per method: its seconds, uinfo_fast's speed-up over it, and how far its test
    cross-entropies lie from uinfo_fast's at uinfo_fast's chosen penalties."""
    base = results.get("uinfo_fast")
    rows = []
    for m, (sec, out, _) in results.items():
        row = {"size": args.size, "dtype": args.dtype, "schedule": args.schedule, "method": m, "seconds": round(sec, 3)}
        if base and m != "uinfo_fast":
            row["speedup"] = round(sec / base[0], 2)
            row["max_ce_diff_same_l2"] = round(max(abs(out[k]["test_ce_by_l2"][base[1][k]["l2"]] - base[1][k]["test_ce"])
                                                   for k in out), 5)
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--methods", default="uinfo_fast,sklearn,torch_lbfgs")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--schedule", choices=["auto", "path", "batched"], default="auto",
                   help="uinfo_fast's penalty schedule (fit_probes); auto = path from a cold start")
    p.add_argument("--json", help="write all numbers to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    size = SIZES[args.size]
    xtr, ytr, xte, yte = layered_features(size["n"], size["m"], size["d"], size["f"])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"# {args.size}: N={size['n']} test={size['m']} D={size['d']} feature sets={size['f']}, "
          f"2 label sets (20, 100 classes) x {len(BENCH_L2_GRID)} l2, {args.dtype} on {machine_name(device)}, "
          f"schedule {args.schedule}, "
          f"torch {torch.__version__}", flush=True)
    results = {}
    for m in methods:
        if m == "uinfo_fast":
            dtype = getattr(torch, args.dtype)
            results[m] = run_uinfo(xtr, ytr, xte, yte, args, device, dtype)
        elif m in ("sklearn", "torch_lbfgs"):
            if m == "sklearn" and device.type != "cpu":
                continue
            results[m] = run_per_probe(m, xtr, ytr, xte, yte, args, device)
        else:
            raise SystemExit(f"unknown method {m!r}")
        print(f"{m}: {results[m][0]:.2f} s", flush=True)

    pairs = list(next(iter(results.values()))[1])
    base = results.get("uinfo_fast")
    print()
    print(f"| method | seconds | uinfo_fast speed-up | " + " | ".join(f"CE {f}/{lab} (nats)" for f, lab in pairs) + " |")
    print("|---|---|---|" + "---|" * len(pairs))
    for m, (sec, out, _) in results.items():
        speed = f"{sec / base[0]:.1f}x" if base and m != "uinfo_fast" else "-"
        print(f"| {m} | {sec:.2f} | {speed} | " + " | ".join(f"{out[k]['test_ce']:.4f}" for k in pairs) + " |")
    if base:
        # Two comparisons: each method's own selected probe (penalties chosen on validation may
        # differ where validation cross-entropies nearly tie), and the probe with the penalty
        # uinfo_fast selected, fitted by the other method (same penalty, the like-for-like check).
        for m, (_, out, _) in results.items():
            if m != "uinfo_fast":
                diff = max(abs(out[k]["test_ce"] - base[1][k]["test_ce"]) for k in pairs)
                same = max(abs(out[k]["test_ce_by_l2"][base[1][k]["l2"]] - base[1][k]["test_ce"]) for k in pairs)
                print(f"max |CE(uinfo_fast) - CE({m})|: each selected probe {diff:.4f} nats, "
                      f"same penalty {same:.4f} nats")
    record("probes", _rows(args, results), device)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, **size, "dtype": args.dtype, "schedule": args.schedule,
                       "device": machine_name(device),
                       "torch": torch.__version__,
                       "results": {m: {"seconds": s, "iterations": it,
                                       "probes": {f"{f}/{lab}": {**v, "test_ce_by_l2": {
                                           f"{l2:.6g}": c for l2, c in v.get("test_ce_by_l2", {}).items()}}
                                           for (f, lab), v in out.items()}}
                                   for m, (s, out, it) in results.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
