"""The checkerboard task (``task.py``): its trials (``trials.py``) and its network (``network.py``)."""
from ..._lazy import lazy_exports

_EXPORTS = {
    ".task": ("TASK",),
    ".trials": ("CODINGS", "DEFAULT_COHERENCES", "LEARNABLE_COHERENCES", "CheckerboardTrials", "input_dim",
                "make_checkerboard_trials", "render_inputs", "split_trials"),
    ".network": ("CheckerboardNet", "accuracy"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
