"""What the bench scripts share: the machine's name for table headers, the run configuration
they measure, and its network, data and optimiser set up as ``uinfo-fast run`` sets them up."""
import datetime
import json
import os
import platform
import subprocess
import sys

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


# Every bench's rows, one JSONL file per bench, kept in the repository: the tables of
# bench/RESULTS.md are made from them (bench/tables.py).
ROWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rows")


def commit() -> str:
    """The commit of the checkout the measured package is imported from ("+" when it has
    uncommitted changes; "unknown" outside git): a bench run against another checkout
    (PYTHONPATH) is tagged with that one."""
    import uinfo_fast

    root = os.path.dirname(os.path.dirname(os.path.abspath(uinfo_fast.__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def record(bench: str, rows: list[dict], device: torch.device) -> str:
    """Appends ``rows`` to the bench's file (``bench/rows/<bench>.jsonl``), each tagged with the
    machine, the commit, torch's version, the date and the command; returns the file."""
    path = os.path.join(ROWS, f"{bench}.jsonl")
    os.makedirs(ROWS, exist_ok=True)
    tags = {"bench": bench, "machine": machine_name(device), "commit": commit(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv])}
    with open(path, "a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**tags, **r}) + "\n")
    return path


def training_setup(cfg: RunConfig):
    """(task data, plan, SGD optimiser) of a run of ``cfg``, before its first step."""
    task = build_task(cfg)
    plan = Plan(cfg, task.train_x.shape[0])
    opt = torch.optim.SGD(task.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return task, plan, opt
