"""What the bench scripts share: the machine's name for table headers, the run configuration
they measure, and its network, data and optimiser set up as ``uinfo-fast run`` sets them up."""
import platform

import torch

from uinfo_fast.experiments import Plan, RunConfig
from uinfo_fast.tasks import build_task

# The network, data and training the benches measure (the synthetic CIFAR-100-shaped set's short
# run), pinned so that they keep measuring what bench/RESULTS.md recorded whatever the default
# run becomes.
PINNED = dict(task="images", dataset="synthetic", n_train=10_000, n_test=2_000, width=8, epochs=5.0, batch_size=128,
              lr=0.1, momentum=0.9, weight_decay=5e-4, lr_schedule="constant", warmup_epochs=0.0, augment=True,
              probe_train=1_200, probe_val=300, probe_test=500, track_every=50, early_until=50, early_points=6,
              l2_grid=[1e-4, 1e-3, 1e-2, 1e-1], n_bootstrap=200, probe_tol=1e-5)


# The penalty grid the engine benches compare solvers over, searched as given (no widening):
# every solver fits the same probes.
BENCH_L2_GRID = tuple(float(v) for v in torch.logspace(-5, -1, 8, dtype=torch.float64))


def machine_name(device: torch.device) -> str:
    """The GPU's name on CUDA; else the CPU model as /proc/cpuinfo names it and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def training_setup(cfg: RunConfig):
    """(task data, plan, SGD optimiser) of a run of ``cfg``, before its first step."""
    task = build_task(cfg)
    plan = Plan(cfg, task.train_x.shape[0])
    opt = torch.optim.SGD(task.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return task, plan, opt
