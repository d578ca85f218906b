"""The checkerboard task (``task.py``): its trials (``trials.py``) and its network (``network.py``)."""
from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

_EXPORTS = {
    "TASK": ".task",
    "DEFAULT_COHERENCES": ".trials",
    "LEARNABLE_COHERENCES": ".trials",
    "CheckerboardTrials": ".trials",
    "CODINGS": ".trials",
    "input_dim": ".trials",
    "make_checkerboard_trials": ".trials",
    "render_inputs": ".trials",
    "split_trials": ".trials",
    "CheckerboardNet": ".network",
    "accuracy": ".network",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .network import CheckerboardNet, accuracy
    from .task import TASK
    from .trials import (CODINGS, DEFAULT_COHERENCES, LEARNABLE_COHERENCES, CheckerboardTrials, input_dim,
                         make_checkerboard_trials, render_inputs, split_trials)
