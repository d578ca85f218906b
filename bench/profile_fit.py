"""Where a fit's time goes: torch.profiler over fit_probes on one feature set.

    python bench/profile_fit.py                          # CPU: 8,000 fit rows x 256 features
    python bench/profile_fit.py --device cuda --rows 40000 --dim 512 --rows-shown 25

2 label sets (20 and 100 classes) x 8 penalties. On CUDA the table is sorted by the operators'
own GPU time and the wall time of the fit is printed beside the GPU time, so the gap between the
two (host-side launch and dispatch cost) shows.
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import uinfo_fast as uf
from uinfo_fast.engine.probe_rows import standardisation
from uinfo_fast.tasks import layered_features

from _harness import BENCH_L2_GRID  # noqa: E402  (bench/, the script's folder)

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--rows", type=int, default=8000)
p.add_argument("--dim", type=int, default=256)
p.add_argument("--device", default="cpu")
p.add_argument("--schedule", choices=["auto", "path", "batched"], default="auto")
p.add_argument("--rows-shown", type=int, default=8, help="operators in the table")
args = p.parse_args()
device = torch.device(args.device)
xtr, ytr, _, _ = layered_features(args.rows, 1, args.dim, 1)
x = xtr["layer1"]
mean, std = standardisation(x)
x = ((x - mean) / std).to(device)
ytr = {k: v.to(device) for k, v in ytr.items()}
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
uf.fit_probes(x[:500], {k: v[:500] for k, v in ytr.items()}, BENCH_L2_GRID, max_iter=30)  # warm-up
sync()
t0 = time.perf_counter()
fit = uf.fit_probes(x, ytr, BENCH_L2_GRID, schedule=args.schedule)
sync()
wall = time.perf_counter() - t0
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
check_every = {} if device.type == "cuda" else {"check_every": 1}
with profile(activities=activities) as prof:
    fit = uf.fit_probes(x, ytr, BENCH_L2_GRID, schedule=args.schedule, **check_every)
    sync()
print(f"probe-iterations: {int(fit.n_iter.sum())}, fit wall time {wall * 1e3:.1f} ms (unprofiled), "
      f"{x.shape[0]} x {x.shape[1]} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=sort, row_limit=args.rows_shown))
