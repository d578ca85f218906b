"""How the probe tolerance trades accuracy of usable information for time, on real checkpoint features.

Trains the default run's network (ResNet-18 width 8, synthetic CIFAR-100-shaped set) for --steps
SGD steps, then measures usable information of 3 layers x (coarse, fine) with the tracker's
probe setup at several tolerances (cold start each time, no bootstrap) and prints the largest
difference to the tightest tolerance and the time of each measurement.

    python bench/probe_tolerance.py
"""
import argparse
import time

from uinfo_fast.experiments import RunConfig, train_step
from uinfo_fast.tracking import UsableInfoTracker

from _harness import PINNED, training_setup

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--steps", type=int, default=200)
p.add_argument("--tols", default="1e-5,1e-4,3e-4,1e-3")
args = p.parse_args()

cfg = RunConfig(**PINNED, layers=["layer2", "layer3", "layer4"])
task, plan, opt = training_setup(cfg)
model = task.model
for step in range(args.steps):
    train_step(task, plan, opt, step)

tols = [float(t) for t in args.tols.split(",")]
results = {}
for tol in tols:
    tracker = UsableInfoTracker(model, task.layers, task.probe_train_x, task.probe_train_labels, task.probe_test_x,
                                task.probe_test_labels, l2_grid=cfg.l2_grid, n_bootstrap=0, tol=tol,
                                val_inputs=task.probe_val_x, val_labels=task.probe_val_labels)
    t0 = time.perf_counter()
    rows = tracker.measure(args.steps)
    results[tol] = (time.perf_counter() - t0, {(r["feature_set"], r["label_set"]): r["bits"] for r in rows})
ref = results[min(tols)][1]
print(f"after {args.steps} steps; usable information per (layer, label set) in bits")
print("| tol | seconds | largest |difference| to tol " + f"{min(tols):g} (bits) |")
print("|---|---|---|")
for tol in tols:
    sec, bits = results[tol]
    print(f"| {tol:g} | {sec:.2f} | {max(abs(bits[k] - ref[k]) for k in ref):.4f} |")
