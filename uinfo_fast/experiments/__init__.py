"""Experiments on the tasks: the run configuration (``config.py``), the training plan
(``plan.py``), the resumable run (``run.py``) and its ranks under torchrun (``distributed.py``), sweeps and perturbed early training
(``sweeps.py``), figures (``plots.py``) and the command line (``cli.py``)."""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "RunConfig": ".config",
    "Plan": ".plan",
    "train_step": ".plan",
    "load_run": ".run",
    "make_tracker": ".run",
    "run_experiment": ".run",
    "run_perturbation": ".sweeps",
    "run_sweep": ".sweeps",
    "plot_runs": ".plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .config import RunConfig
    from .plan import Plan, train_step
    from .plots import plot_runs
    from .run import load_run, make_tracker, run_experiment
    from .sweeps import run_perturbation, run_sweep
