"""The probe engine: fits many L2-penalised softmax probes at once through the compiled ops, and
turns them into usable information.

Where things are: the compiled ops (kernels in ``csrc/``) load in ``extension.py``; parameters are
declared in ``params.py`` and tensors checked in ``validation.py``; the probe layout and
``FitStatus`` are in ``layout.py``; ``ProbeFit`` and ``fit_probes`` in ``fit.py``; warm starts
and the penalty path in ``path.py``; the estimator (validate -> fit -> select -> score) in
``estimator.py``, its result rows in ``results.py``; the pure-PyTorch reference in
``reference.py``. Names load on first use, so ``params`` needs no compiled extension.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_L2_GRID": ".grid",
    "EstimatorOptions": ".estimator",
    "FitOptions": ".fit",
    "FitStatus": ".layout",
    "MEASUREMENT_FIELDS": ".results",
    "ProbeFit": ".fit",
    "ProbeLayout": ".layout",
    "UsableInformation": ".results",
    "UsableInformationResult": ".results",
    "cuda_kernels_built": ".extension",
    "estimate": ".estimator",
    "estimate_usable_information": ".estimator",
    "fit_probes": ".fit",
    "ops": ".extension",
    "probe_layout": ".layout",
    "probe_log_likelihood": ".fit",
    "sklearn_C": ".fit",
    "standardisation": ".fit",
    "validation_split": ".inputs",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .estimator import EstimatorOptions, estimate, estimate_usable_information
    from .grid import DEFAULT_L2_GRID
    from .inputs import validation_split
    from .fit import FitOptions, ProbeFit, fit_probes, probe_log_likelihood, sklearn_C, standardisation
    from .layout import FitStatus, ProbeLayout, probe_layout
    from .extension import cuda_kernels_built, ops
    from .results import MEASUREMENT_FIELDS, UsableInformation, UsableInformationResult
