"""Tracking overhead: the same training run with and without usable-information tracking.

Tracking here is what the issue specifies: 2 label sets (coarse, fine) x 3 layers (the outputs
of ResNet stages 2, 3 and 4, the last one the penultimate features) every 100 steps, no extra
early measurements. Both runs train identically (same seed, same batches); the overhead is
(wall with tracking) / (wall without) - 1, training loop only (data generation and the final
accuracy pass excluded). Runs alternate plain / tracked so that drift in machine speed hits both.

    python bench/bench_tracking.py                   # the default run (CPU): target <= 10%
    python bench/bench_tracking.py --size gpu        # ResNet-18 (width 64), 50,000 images, CUDA: <= 5%
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

import torch

from uinfo_fast.experiments import RunConfig, run_experiment

SIZES = {
    # the default `uinfo-fast run` configuration
    "cpu": dict(device="cpu"),
    # CIFAR-100 size: 50,000 training images of the synthetic set, standard-width ResNet-18
    "gpu": dict(device="cuda", n_train=50_000, n_test=10_000, width=64, epochs=2.0, probe_train=5_000,
                probe_test=2_000),
    # a smoke test of this script
    "tiny": dict(device="cpu", n_train=2_000, n_test=500, epochs=1.0, probe_train=500, probe_val=150, probe_test=250),
}
TRACKING = dict(layers=["layer2", "layer3", "layer4"], label_sets=["coarse", "fine"], track_every=100,
                early_points=0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--repeats", type=int, default=1, help="plain/tracked pairs; the median ratio is reported")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args()
    size = SIZES[args.size]
    if size["device"] == "cuda" and not torch.cuda.is_available():
        print("bench_tracking: --size gpu needs a CUDA device", file=sys.stderr)
        return 2
    plain_cfg = RunConfig(**size, track=False)
    tracked_cfg = RunConfig(**size, **TRACKING)
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            plain = run_experiment(plain_cfg, os.path.join(tmp, f"plain{r}"), progress=False)
            tracked = run_experiment(tracked_cfg, os.path.join(tmp, f"tracked{r}"), progress=False)
            pairs.append((plain, tracked))
            print(f"pair {r}: plain {plain['wall_seconds']:.1f} s, tracked {tracked['wall_seconds']:.1f} s "
                  f"(measuring {tracked['measure_seconds']:.1f} s), overhead "
                  f"{100 * (tracked['wall_seconds'] / plain['wall_seconds'] - 1):.1f}%")
    ratios = [t["wall_seconds"] / p_["wall_seconds"] - 1 for p_, t in pairs]
    overhead = statistics.median(ratios)
    device = torch.cuda.get_device_name() if size["device"] == "cuda" else platform.processor() or platform.machine()
    print(f"\n| size | device | steps | plain (s) | tracked (s) | measuring (s) | overhead |")
    print("|---|---|---|---|---|---|---|")
    p_, t = pairs[len(pairs) // 2]
    print(f"| {args.size} | {device}, {torch.get_num_threads()} threads | {t['steps']} | {p_['wall_seconds']:.1f} | "
          f"{t['wall_seconds']:.1f} | {t['measure_seconds']:.1f} | {100 * overhead:.1f}% |")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, "config": tracked_cfg.to_json(), "device": device,
                       "pairs": [{"plain": a, "tracked": b} for a, b in pairs], "overhead_median": overhead}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
