"""Every ``fit_probes`` op call a tracked run makes, and of what kind: fits (in the features'
arithmetic; a warm one may list foreseen finalists to polish in float64 inside the same call) and
float64 calls of their own (finalists no fit call polished). Each call is a round trip through
Python and, on a GPU, host synchronisations; the fewer, the less a measurement waits. The
iterations show what work the calls did, independent of the machine's speed.

Runs: bench_dense's one-epoch digit run (seed 11) tracked as ``--run`` names it
(``every10-amortised``, ``every10-exact``, ``every1-amortised``, ``every1-exact``), or
``tracking``, bench_tracking's pinned synthetic run (100 fine classes, 5 measurements). Prints
each call and the totals, and appends a row to ``bench/rows/op_calls.jsonl``. ``--keep-log``
copies the run's log out; ``--compare`` sets this run's rows against such a copy (from another
checkout, through ``PYTHONPATH``): rows, penalties that differ, the largest difference in bits.

    python bench/op_calls.py --run every10-amortised --keep-log before.jsonl   # one checkout
    python bench/op_calls.py --run every10-amortised --compare before.jsonl    # the other
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import torch

from uinfo_fast.engine import extension, path
from uinfo_fast.experiments import RunConfig
from uinfo_fast.experiments.run import run_experiment
from uinfo_fast.tracking import read_log

from _harness import record  # noqa: E402  (bench/, the script's folder)
from bench_dense import RUN, RUN_MODES  # noqa: E402
from bench_tracking import SIZES, TRACKING  # noqa: E402

RUNS = {**{m: {**RUN, **cfg} for m, cfg in RUN_MODES.items() if m != "untracked"},
        "tracking": {**SIZES["cpu"], **TRACKING}}


class CountingOps:
    """Stands in for ``torch.ops.uinfo_fast`` in ``engine.path`` and records every ``fit_probes``
    call: its kind, schedule, probes listed to polish, iterations and seconds."""

    def __init__(self):
        self.calls: list[dict] = []

    def __getattr__(self, op):
        return getattr(extension.ops, op)

    def fit_probes(self, x, labels, weight, *args, **kw):
        t0 = time.perf_counter()
        out = extension.ops.fit_probes(x, labels, weight, *args, **kw)
        polish = kw.get("polish")
        self.calls.append({"kind": "float64" if weight[0].dtype == torch.float64 else "fit",
                           "schedule": kw.get("schedule", "batched"),
                           "polish_listed": sum(len(p) for p in polish) if polish else 0,
                           "iterations": int(sum(int(n.sum()) for n in out[4])),
                           "seconds": time.perf_counter() - t0})
        return out


def compare(log: str, other: str) -> dict:
    """This run's measured rows against ``other``'s, matched by (step, feature set, label set)."""
    def rows(path):
        return {(r["step"], r["feature_set"], r["label_set"]): r for r in read_log(path) if r.get("bits") is not None}
    mine, theirs = rows(log), rows(other)
    both = [k for k in mine if k in theirs]
    return {"compared_rows": len(both), "l2_differs": sum(mine[k]["l2"] != theirs[k]["l2"] for k in both),
            "max_bits_diff": max((abs(mine[k]["bits"] - theirs[k]["bits"]) for k in both), default=None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", choices=sorted(RUNS), default="every10-amortised")
    p.add_argument("--keep-log", help="copy the run's log.jsonl here")
    p.add_argument("--compare", help="a log kept by --keep-log to set this run's rows against")
    args = p.parse_args()
    counting = CountingOps()
    path.ops = counting
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_experiment(RunConfig(**RUNS[args.run]), tmp, progress=False)
        log = os.path.join(tmp, "log.jsonl")
        if args.keep_log:
            shutil.copy(log, args.keep_log)
        against = compare(log, args.compare) if args.compare else {}
    for c in counting.calls:
        print(f"  {c['kind']:<8}{c['schedule']:<8} polish listed {c['polish_listed']:>3}  "
              f"iterations {c['iterations']:>6}  {c['seconds']:.2f} s")
    n, calls = summary["measurements"], counting.calls
    row = {"run": args.run, "measurements": n, **against}
    for kind in ("fit", "float64"):
        mine = [c for c in calls if c["kind"] == kind]
        row.update({f"{kind}_calls": len(mine), f"{kind}_iterations": sum(c["iterations"] for c in mine)})
    print(f"{args.run}: {n} measurements, {row['fit_calls']} fit calls ({row['fit_iterations']} iterations) and "
          f"{row['float64_calls']} float64 calls of their own ({row['float64_iterations']} iterations): "
          f"{len(calls) / n:.2f} op calls per measurement")
    if against:
        print(f"against {args.compare}: {against['compared_rows']} rows, penalty differs in {against['l2_differs']}, "
              f"largest difference {against['max_bits_diff']:.2g} bits")
    print("rows ->", record("op_calls", [row], torch.device("cpu")))


if __name__ == "__main__":
    main()
