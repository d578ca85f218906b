"""Small costs behind the benchmark tables, each against its alternative in the same run:

1. the CPU softmax kernel, ns per logit: AVX2 path against the scalar fallback (UINFO_FAST_NO_AVX2);
2. the L-BFGS bookkeeping, ms per iteration, fused CPU kernel against the generic ATen form
   (UINFO_FAST_GENERIC_LBFGS), on 64 rows so that the pass costs next to nothing;
3. one tracker measurement of the default run (3 layers x 2 label sets) after 100 training
   steps, split into the forward passes over the probe images and the probe fits;
4. the capture of the default run's 2,000 probe images at 4 layers, inputs in channels-last
   memory format (the tracker's default) against contiguous ones.

    python bench/micro_costs.py
"""
import os
import subprocess
import sys
import time

import torch

import uinfo_fast as uf
from uinfo_fast.engine.extension import ops


def softmax_ns_per_logit(repeats: int = 50) -> float:
    gen = torch.Generator().manual_seed(0)
    sets = [20, 100] * 8
    offsets = torch.tensor([0] + torch.tensor(sets).cumsum(0).tolist())
    cols = torch.tensor([0, 1] * 8)
    rows = 1152
    labels = torch.stack([torch.randint(0, 20, (rows,), generator=gen), torch.randint(0, 100, (rows,), generator=gen)], 1)
    x = torch.randn(rows, int(offsets[-1]), generator=gen)
    buf = x.clone()
    for _ in range(5):
        ops.softmax_xent_(buf, labels, offsets, cols, 1.0, True)

    def timed(with_kernel: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            buf.copy_(x)
            if with_kernel:
                ops.softmax_xent_(buf, labels, offsets, cols, 1.0, True)
        return time.perf_counter() - t0

    return (timed(True) - timed(False)) / repeats / x.numel() * 1e9


def bookkeeping_ms_per_iteration(generic: bool) -> float:
    from uinfo_fast.engine.probe_rows import standardisation
    from uinfo_fast.tasks import layered_features

    from _harness import BENCH_L2_GRID

    if generic:
        os.environ["UINFO_FAST_GENERIC_LBFGS"] = "1"
    else:
        os.environ.pop("UINFO_FAST_GENERIC_LBFGS", None)
    xtr, ytr, _, _ = layered_features(8000, 1, 256, 1)
    x = xtr["layer1"]
    mean, std = standardisation(x)
    x, y = ((x - mean) / std)[:64].contiguous(), {k: v[:64] for k, v in ytr.items()}
    uf.fit_probes(x, y, BENCH_L2_GRID, max_iter=3)
    t0 = time.perf_counter()
    fit = uf.fit_probes(x, y, BENCH_L2_GRID, max_iter=60, tol=1e-12, schedule="path")
    seconds = time.perf_counter() - t0
    os.environ.pop("UINFO_FAST_GENERIC_LBFGS", None)
    # The path runs one stage per penalty (coarse and fine probe together): a stage takes as many
    # iterations as its slower probe.
    k = len(BENCH_L2_GRID)
    iterations = sum(max(int(fit.n_iter[i]), int(fit.n_iter[k + i])) for i in range(k))
    return seconds / iterations * 1e3


def measurement_split(train_steps: int = 100, repeats: int = 3) -> tuple[float, float]:
    from uinfo_fast.experiments import RunConfig, make_tracker, train_step

    from _harness import PINNED, training_setup

    cfg = RunConfig(**PINNED, layers=["layer2", "layer3", "layer4"])
    task, plan, opt = training_setup(cfg)
    tracker = make_tracker(cfg, task, None)
    capture, total = [], []
    for step in range(train_steps + repeats * 20):
        if step >= train_steps and (step - train_steps) % 20 == 0:  # warm-started, as in a run
            t0 = time.perf_counter()
            for inputs in (tracker.train_inputs, tracker.val_inputs, tracker.test_inputs):
                tracker.capture(inputs)
            capture.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tracker.measure(step)
            total.append(time.perf_counter() - t0)
        train_step(task, plan, opt, step)
    cap = sum(capture) / len(capture)
    return cap, sum(total) / len(total) - cap


def capture_seconds(channels_last: bool, repeats: int = 3) -> float:
    from uinfo_fast.experiments import RunConfig
    from uinfo_fast.tasks import build_task
    from uinfo_fast.tracking import FeatureCapture

    from _harness import PINNED

    task = build_task(RunConfig(**PINNED))
    x = torch.cat([task.probe_train_x, task.probe_val_x, task.probe_test_x])
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    capture = FeatureCapture(task.model, task.layers)
    capture(x[:256], 256)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        capture(x, 256)
        times.append(time.perf_counter() - t0)
    return min(times)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--softmax-only":
        print(f"{softmax_ns_per_logit():.3f}")
        sys.exit(0)
    scalar = subprocess.run([sys.executable, __file__, "--softmax-only"], env=dict(os.environ, UINFO_FAST_NO_AVX2="1"),
                            capture_output=True, text=True, check=True).stdout.strip()
    print(f"softmax_xent_ (1,152 x 960 logits, {torch.get_num_threads()} threads): "
          f"AVX2 {softmax_ns_per_logit():.2f} ns/logit, scalar fallback {float(scalar):.2f} ns/logit")
    print(f"L-BFGS bookkeeping (64 rows, 2 label sets x 8 penalties): fused CPU kernel "
          f"{bookkeeping_ms_per_iteration(False):.2f} ms/iteration, generic ATen form "
          f"{bookkeeping_ms_per_iteration(True):.2f} ms/iteration")
    cap, fits = measurement_split()
    print(f"one measurement of the default run (3 layers x 2 label sets, warm): forward passes over the "
          f"2,000 probe images {cap:.2f} s, probe fits and scoring {fits:.2f} s")
    print(f"capture of the 2,000 probe images at 4 layers (best of 3): channels-last inputs "
          f"{capture_seconds(True):.3f} s, contiguous inputs {capture_seconds(False):.3f} s")
