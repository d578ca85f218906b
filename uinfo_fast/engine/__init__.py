"""The probe engine: fits many L2-penalised softmax probes at once through the compiled ops, and
turns them into usable information.

Where things are: the compiled ops (kernels in ``csrc/``) load in ``extension.py``; options are
declared in ``params.py`` (each field once: default, constraint, help), features and penalties
checked in ``validation.py``, and labels and classes (label sets, class counts, renumbering) in
``labels.py``; the penalty grid and its widening are in ``grid.py``, the validation scores and the
choice in ``scoring.py``; the probe layout and ``FitStatus`` are in ``layout.py``; the rows every
probe family is fitted and scored on in ``probe_rows.py``; ``ProbeFit`` and ``fit_probes`` in
``fit.py``, their one-hidden-layer counterparts (``family="mlp"``) in ``mlp.py``; warm starts and
the op calls (batched or along the penalty path) in ``path.py``; the estimator (validate -> fit ->
select -> score) in ``estimator.py``, its result rows in ``results.py``; the pure-PyTorch
reference in ``reference.py``. Only what users call is exported below; the rest is reached by its module.
Names load on first use, so ``params`` needs no compiled extension.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    ".estimator": ("EstimatorOptions", "estimate_usable_information"),
    ".extension": ("cuda_kernels_built",),
    ".fit": ("ProbeFit", "fit_probes", "probe_log_likelihood", "sklearn_C"),
    ".grid": ("DEFAULT_L2_GRID",),
    ".layout": ("FitStatus",),
    ".mlp": ("MlpProbeFit", "fit_mlp_probes"),
    ".results": ("MEASUREMENT_FIELDS", "UsableInformation", "UsableInformationResult"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
