"""Measure a finished run's last network again with another probe setup (a wider penalty grid,
say): one measurement at the checkpoint's step, printed per layer and label set.

    python examples/remeasure_checkpoint.py runs/sweep_digits_s789/lr0.1_bs32_s7 --l2-grid 1e-7,1e-5,1e-3,1e-1,10
"""
import argparse

import torch

from uinfo_fast.experiments import load_run, make_tracker
from uinfo_fast.tasks import build_task

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir")
p.add_argument("--l2-grid", required=True, help="comma-separated probe penalties")
p.add_argument("--layers", default=None, help="comma-separated layers (default: the run's)")
args = p.parse_args()

cfg, _ = load_run(args.run_dir)
cfg = cfg.replace(l2_grid=[float(v) for v in args.l2_grid.split(",")], n_bootstrap=0,
                  layers=args.layers.split(",") if args.layers else cfg.layers)
task = build_task(cfg)
state = torch.load(f"{args.run_dir}/checkpoint.pt", weights_only=False)
task.model.load_state_dict(state["model"])
for r in make_tracker(cfg, task, None).measure(state["step"]):
    beyond = f", beyond {r['beyond_of']} {r['beyond_bits']:.3f}" if r.get("beyond_bits") is not None else ""
    print(f"step {state['step']} {r['feature_set']} {r['label_set']}: {r['bits']:.3f} bits (l2 {r['l2']:g}){beyond}")
