"""What the bench scripts share: the machine's name for table headers, and the default run's
network, data and optimiser set up as ``uinfo-fast run`` sets them up."""
import platform

import torch

from uinfo_fast.experiments import Plan, RunConfig
from uinfo_fast.tasks import build_task


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
