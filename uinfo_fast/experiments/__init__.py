"""Experiments on the tasks: the run configuration (``config.py``), the training plan
(``plan.py``), the resumable run (``run.py``) and its ranks under torchrun (``distributed.py``), sweeps and perturbed early training
(``sweeps.py``), figures (``plots.py``) and the command line (``cli.py``)."""
from .._lazy import lazy_exports

_EXPORTS = {
    ".config": ("RunConfig",),
    ".plan": ("Plan", "train_step"),
    ".plots": ("plot_runs",),
    ".run": ("load_run", "make_tracker", "run_experiment"),
    ".sweeps": ("run_perturbation", "run_sweep"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
