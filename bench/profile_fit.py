"""Where a fit's time goes: torch.profiler over fit_probes on one CPU-size feature set.

    python bench/profile_fit.py            # 8,000 fit rows x 256 features, 2 label sets x 8 penalties
"""
import argparse

import torch
from torch.profiler import profile

import uinfo_fast as uf
from uinfo_fast.synthetic import layered_features
from uinfo_fast.usable_information import DEFAULT_L2_GRID, standardisation

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--rows", type=int, default=8000)
p.add_argument("--dim", type=int, default=256)
p.add_argument("--rows-shown", type=int, default=8, help="operators in the table")
args = p.parse_args()
xtr, ytr, _, _ = layered_features(args.rows, 1, args.dim, 1)
x = xtr["layer1"]
mean, std = standardisation(x)
x = (x - mean) / std
uf.fit_probes(x[:500], {k: v[:500] for k, v in ytr.items()}, DEFAULT_L2_GRID, max_iter=5)  # warm-up
with profile() as prof:
    fit = uf.fit_probes(x, ytr, DEFAULT_L2_GRID, check_every=1)
print(f"probe-iterations: {int(fit.n_iter.sum())}")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows_shown))
