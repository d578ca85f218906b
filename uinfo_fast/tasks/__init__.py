"""Tasks: what a run trains on. Each task is its data, its network and its label sets in one
folder (``images/``, ``checkerboard/``), listed in the registry (``registry.py``); the probe
sets every task draws the same way are in ``probes.py``; ``features.py`` holds synthetic layer
features for the probe engine alone (demo, benchmarks).
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "Dataset": ".registry",
    "Task": ".registry",
    "TaskData": ".registry",
    "build_task": ".registry",
    "get_task": ".registry",
    "register_task": ".registry",
    "task_names": ".registry",
    "probe_sets": ".probes",
    "layered_features": ".features",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .features import layered_features
    from .probes import probe_sets
    from .registry import Dataset, Task, TaskData, build_task, get_task, register_task, task_names
