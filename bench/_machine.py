"""The machine a benchmark ran on, for the header of its table (shared by the bench scripts)."""
import platform

import torch


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
