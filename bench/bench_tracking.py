"""Tracking overhead: the same training run with and without usable-information tracking.

Tracking: 2 label sets (coarse, fine) x 3 layers (the outputs of ResNet stages 2, 3 and 4, the
last one the penultimate features) every 100 steps, no extra early measurements; synchronous,
and asynchronous (fits on a background worker). Every run trains identically (same seed, same
batches). Two figures per mode: the time the training thread lost to tracking (the tracker's
own timer: every measurement when synchronous, the captures and any waiting when asynchronous)
as a share of the plain run's wall time, and the wall-clock overhead (wall with tracking) /
(wall without) - 1, training loop only. Runs alternate plain / sync / async so that drift in
machine speed hits all of them. The network and data are pinned below (PINNED).

    python bench/bench_tracking.py --repeats 3       # the default run's network (CPU)
    python bench/bench_tracking.py --size gpu        # ResNet-18 (width 64), 50,000 images, CUDA
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch

from uinfo_fast.experiments import RunConfig, run_experiment

from _harness import PINNED, machine_name, record  # noqa: E402  (bench/, the script's folder)

SIZES = {
    # the pinned run configuration (_harness.PINNED)
    "cpu": dict(PINNED, device="cpu"),
    # CIFAR-100 size: 50,000 training images of the synthetic set, standard-width ResNet-18
    "gpu": dict(PINNED, device="cuda", n_train=50_000, n_test=10_000, width=64, epochs=2.0, probe_train=5_000,
                probe_test=2_000),
    # a smoke test of this script
    "tiny": dict(PINNED, device="cpu", n_train=2_000, n_test=500, epochs=1.0, probe_train=500, probe_val=150,
                 probe_test=250),
}
TRACKING = dict(layers=["layer2", "layer3", "layer4"], label_sets=["coarse", "fine"], track_every=100,
                early_points=0)


def _line(name: str, plain: dict, tracked: dict) -> str:
    split = ", ".join(f"{k} {v:.2f}" for k, v in tracked["measure_phases"].items())
    return (f"  {name}: {tracked['wall_seconds']:.1f} s, training thread lost {tracked['measure_seconds']:.1f} s = "
            f"{100 * tracked['measure_seconds'] / plain['wall_seconds']:.1f}% of plain ({split}), wall overhead "
            f"{100 * (tracked['wall_seconds'] / plain['wall_seconds'] - 1):.1f}%")


def run_repeats(size: dict, repeats: int, modes: list[str], tmp: str) -> list[dict]:
    """Per repeat: the plain run, then a tracked run per mode (sync, async), alternating so that
    drift in machine speed hits every mode alike."""
    out = []
    for r in range(repeats):
        runs = {"plain": run_experiment(RunConfig(**size, track=False), os.path.join(tmp, f"plain{r}"), progress=False)}
        print(f"repeat {r}: plain {runs['plain']['wall_seconds']:.1f} s", flush=True)
        for mode in modes:
            cfg = RunConfig(**{**size, **TRACKING}, async_tracking=mode == "async")
            runs[mode] = run_experiment(cfg, os.path.join(tmp, f"{mode}{r}"), progress=False)
            print(_line(mode, runs["plain"], runs[mode]), flush=True)
        out.append(runs)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--repeats", type=int, default=1, help="repeats of (plain, tracked...); medians are reported")
    p.add_argument("--modes", default="sync,async", help="tracking modes to compare: sync, async")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args()
    size = SIZES[args.size]
    if size["device"] == "cuda" and not torch.cuda.is_available():
        print("bench_tracking: --size gpu needs a CUDA device", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        repeats = run_repeats(size, args.repeats, modes, tmp)
    device = machine_name(torch.device(size["device"]))
    print("\n| size | device | tracking | steps | measurements | training thread lost / plain wall (median) | "
          "wall overhead (median) |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for mode in modes:
        lost = statistics.median(r[mode]["measure_seconds"] / r["plain"]["wall_seconds"] for r in repeats)
        wall = statistics.median(r[mode]["wall_seconds"] / r["plain"]["wall_seconds"] - 1 for r in repeats)
        summary[mode] = {"lost_share_median": lost, "wall_overhead_median": wall}
        t = repeats[0][mode]
        print(f"| {args.size} | {device} | {mode} | {t['steps']} | {t['measurements']} | {100 * lost:.1f}% | "
              f"{100 * wall:.1f}% |")
    record("tracking", [{"size": args.size, "mode": m, "repeats": args.repeats, "steps": repeats[0][m]["steps"],
                         "measurements": repeats[0][m]["measurements"],
                         "lost_share": round(summary[m]["lost_share_median"], 4),
                         "wall_overhead": round(summary[m]["wall_overhead_median"], 4)} for m in modes],
           torch.device(size["device"]))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, "device": device, "tracking": TRACKING, "pinned": size,
                       "repeats": repeats, "summary": summary}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
