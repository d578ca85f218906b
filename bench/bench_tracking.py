"""Tracking overhead: the same training run with and without usable-information tracking.

Tracking here is what the issue specifies: 2 label sets (coarse, fine) x 3 layers (the outputs
of ResNet stages 2, 3 and 4, the last one the penultimate features) every 100 steps, no extra
early measurements. Both runs train identically (same seed, same batches); the overhead is
(wall with tracking) / (wall without) - 1, training loop only (data generation and the final
accuracy pass excluded). Runs alternate plain / tracked so that drift in machine speed hits both.

    python bench/bench_tracking.py --repeats 3       # the default run (CPU): measuring <= 5% of the plain run
    python bench/bench_tracking.py --size gpu        # ResNet-18 (width 64), 50,000 images, CUDA: <= 5%
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

from _harness import machine_name  # noqa: E402  (bench/, the script's folder)

# The network, data and training of the default `uinfo-fast run` as of uinfo-fast 0.2, pinned here
# so that this bench keeps measuring the same thing when the default run changes.
PINNED = dict(task="images", dataset="synthetic", n_train=10_000, n_test=2_000, width=8, epochs=5.0, batch_size=128,
              lr=0.1, momentum=0.9, weight_decay=5e-4, probe_train=1_200, probe_val=300, probe_test=500,
              l2_grid=[1e-4, 1e-3, 1e-2, 1e-1], n_bootstrap=200, probe_tol=1e-5)
SIZES = {
    # the default `uinfo-fast run` configuration
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
            split = ", ".join(f"{k} {v:.2f}" for k, v in tracked["measure_phases"].items())
            print(f"pair {r}: plain {plain['wall_seconds']:.1f} s, tracked {tracked['wall_seconds']:.1f} s "
                  f"(measuring {tracked['measure_seconds']:.1f} s = "
                  f"{100 * tracked['measure_seconds'] / plain['wall_seconds']:.1f}% of plain; {split}), wall overhead "
                  f"{100 * (tracked['wall_seconds'] / plain['wall_seconds'] - 1):.1f}%", flush=True)
    ratios = [t["wall_seconds"] / p_["wall_seconds"] - 1 for p_, t in pairs]
    overhead = statistics.median(ratios)
    measuring = statistics.median(t["measure_seconds"] / p_["wall_seconds"] for p_, t in pairs)
    device = machine_name(torch.device(size["device"]))
    print(f"\n| size | device | steps | measurements | measuring / plain wall (median) | wall overhead (median) |")
    print("|---|---|---|---|---|---|")
    t = pairs[0][1]
    print(f"| {args.size} | {device} | {t['steps']} | {t['measurements']} | "
          f"{100 * measuring:.1f}% | {100 * overhead:.1f}% |")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, "config": tracked_cfg.to_json(), "device": device,
                       "pairs": [{"plain": a, "tracked": b} for a, b in pairs], "overhead_median": overhead,
                       "measuring_share_median": measuring}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
