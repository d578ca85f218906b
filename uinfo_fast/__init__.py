"""uinfo-fast: usable information of neural representations from many softmax probes at once."""
from . import _ops  # noqa: F401  (loads the C++/CUDA kernels and registers fake kernels)
from .probes import ProbeFit, fit_probes, probe_log_likelihood, sklearn_C
from .usable_information import UsableInformation, UsableInformationResult, estimate_usable_information

__all__ = [
    "ProbeFit",
    "UsableInformation",
    "UsableInformationResult",
    "estimate_usable_information",
    "fit_probes",
    "probe_log_likelihood",
    "sklearn_C",
]
