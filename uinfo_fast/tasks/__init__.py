"""Tasks: what a run trains on. Each task is its data, its network and its label sets in one
folder (``images/``, ``checkerboard/``), listed in the registry (``registry.py``); the probe
sets every task draws the same way are in ``probes.py``; ``features.py`` holds synthetic layer
features for the probe engine alone (demo, benchmarks).
"""
from .._lazy import lazy_exports

_EXPORTS = {
    ".features": ("layered_features",),
    ".probes": ("probe_sets",),
    ".registry": ("Dataset", "Task", "TaskData", "build_task", "get_task", "register_task", "task_names"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
