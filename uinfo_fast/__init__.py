"""uinfo-fast: usable information of neural representations from many softmax probes at once."""
from . import _ops  # noqa: F401  (loads the C++/CUDA kernels and registers fake kernels)
from .capture import FeatureCapture
from .probes import ProbeFit, fit_probes, probe_log_likelihood, sklearn_C
from .tracker import Schedule, UsableInfoTracker
from .usable_information import UsableInformation, UsableInformationResult, estimate_usable_information

__all__ = [
    "FeatureCapture",
    "ProbeFit",
    "Schedule",
    "UsableInformation",
    "UsableInformationResult",
    "UsableInfoTracker",
    "estimate_usable_information",
    "fit_probes",
    "probe_log_likelihood",
    "sklearn_C",
]
