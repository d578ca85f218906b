"""uinfo-fast: usable information of neural representations from many probes at once (softmax
probes, or one-hidden-layer ones).

The package is layered, every import pointing down:

* ``uinfo_fast.experiments``  run config, training plan, resumable runs, sweeps, plots, CLI
* ``uinfo_fast.integrations`` the Lightning and Hugging Face callbacks, TensorBoard and W&B sinks
* ``uinfo_fast.tasks``        the task registry: each task's data, network and label sets
* ``uinfo_fast.tracking``     feature capture, measurement schedule, run log, tracker
* ``uinfo_fast.engine``       the probe engine: validation, fits, penalty path, estimator
* ``csrc/``                   the compiled ops ``torch.ops.uinfo_fast.*`` (CPU and CUDA)

The names below are loaded on first use, so reading and plotting a log never loads the
compiled extension.
"""
from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    ".engine": ("EstimatorOptions", "MlpProbeFit", "ProbeFit", "UsableInformation", "UsableInformationResult",
                "estimate_usable_information", "fit_mlp_probes", "fit_probes", "probe_log_likelihood", "sklearn_C"),
    ".tracking": ("CaptureOptions", "FeatureCapture", "RunLog", "Schedule", "UsableInfoTracker", "read_log"),
    ".experiments": ("RunConfig",),
    ".integrations": ("TensorBoardSink", "UsableInformationCallback", "UsableInformationTrainerCallback", "WandbSink"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
