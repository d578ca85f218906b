"""Where the time of a fit_mlp_probes call goes: torch.profiler over 5 iterations of the
bench_mlp.py workload (2 feature sets x {100, 20} classes x 3 penalties, N = 10,000, D = 256,
H = 64) on one thread, operators sorted by their own time.

    python bench/profile_mlp.py
"""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mlp import workload  # noqa: E402

from uinfo_fast.engine.mlp import MlpFitOptions, fit_mlp_sets  # noqa: E402


def main():
    torch.set_num_threads(1)
    views, labels = workload(10_000, 10, 256)
    xs = {k: v[:10_000].contiguous() for k, v in views.items()}
    y = labels[:10_000]
    args = (["fine", "coarse"], [100, 20], [1e-4, 1e-3, 1e-2])
    fit_mlp_sets(xs, y, *args, MlpFitOptions(hidden=64, restarts=1, max_iter=2))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit_mlp_sets(xs, y, *args, MlpFitOptions(hidden=64, restarts=1, max_iter=5))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
