"""Warm against cold fits of the same features: how much a measurement depends on where its fit
started, and what the stopping rule costs.

Trains a small run (ResNet-18 of width 4 on 1,000 built-in images, 300 probe-train inputs for
100 fine classes: near-separable probes, the hardest case) and at each of its measurements fits
the tracker's captured features twice: warm-started from the previous measurement, as a run
does, and cold, as a resumed run does. Two rules, same features: the current one (every probe to
max |gradient| <= tol, then the two best of each label set fitted on in float64 to
max |gradient| <= min(tol, 0.1 l2), and the choice made between them) and the grid fit alone
(no polish). Prints, per rule and tolerance, the largest warm-cold difference
in bits over the reported pairs (and how many chose different penalties) and the seconds spent
fitting.

    python bench/bench_warm_cold.py
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from uinfo_fast.engine.estimator import estimate
from uinfo_fast.experiments import RunConfig, make_tracker, train_step

from _harness import PINNED, machine_name, training_setup


def captured_measurements(cfg: RunConfig):
    """(step, features, tracker) at every measurement step of a run of ``cfg``."""
    task, plan, opt = training_setup(cfg)
    tracker = make_tracker(cfg, task, None)
    for step in range(plan.total_steps + 1):
        if tracker.schedule.due(step) or step == plan.total_steps:
            yield step, tracker.capture_features(), tracker
        if step == plan.total_steps:
            break
        train_step(task, plan, opt, step)


def compare(measurements, options) -> dict:
    worst, flips, seconds, pairs, last = 0.0, 0, 0.0, 0, None
    for _, feats, tracker in measurements:
        t0 = time.perf_counter()
        warm = estimate(feats, tracker.labels, options, last)
        cold = estimate(feats, tracker.labels, options)
        seconds += time.perf_counter() - t0
        last = warm
        for w, c in zip(warm.results, cold.results):
            pairs += 1
            if w.l2 != c.l2:
                flips += 1
            else:
                worst = max(worst, abs(w.bits - c.bits))
    return {"worst_bits": worst, "flips": flips, "pairs": pairs, "seconds": seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tols", default="1e-4,1e-5")
    args = p.parse_args(argv)
    cfg = RunConfig(**{**PINNED, **dict(epochs=2.0, n_train=1000, n_test=600, width=4, probe_train=300, probe_val=100,
                                        probe_test=200, batch_size=50, track_every=4, seed=3, n_bootstrap=0)})
    measurements = list(captured_measurements(cfg))
    base = measurements[0][2].options
    print(f"# {len(measurements)} measurements x {len(base.l2_grid)} penalties, 4 layers x (coarse, fine), "
          f"on {machine_name(torch.device('cpu'))}")
    print("| tol | chosen probes polished | largest warm-cold difference, same penalty (bits) | "
          "pairs choosing another penalty | seconds (warm + cold) |")
    print("|---|---|---|---|---|")
    for tol in (float(t) for t in args.tols.split(",")):
        for polish in (True, False):
            opts = dataclasses.replace(base, tol=tol, polish_l2_tol=base.polish_l2_tol if polish else None)
            r = compare(measurements, opts)
            print(f"| {tol:g} | {'yes' if polish else 'no'} | {r['worst_bits']:.4f} | {r['flips']} of {r['pairs']} | "
                  f"{r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
