"""Where researchers already train: a PyTorch Lightning callback (``lightning_callback.py``), a
Hugging Face Trainer callback (``transformers_callback.py``), both taking their probe sets the same
way (``probe_sets.py``), and row sinks for TensorBoard (``tensorboard_sink.py``) and Weights &
Biases (``wandb_sink.py``), all naming their scalars in one place (``scalars.py``).

Lightning, transformers, TensorBoard and wandb are optional (the ``[lightning]``,
``[transformers]``, ``[tensorboard]`` and ``[wandb]`` extras); each is imported only by the module
that needs it, with a message naming the extra when it is missing.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    ".lightning_callback": ("UsableInformationCallback",),
    ".scalars": ("row_scalars",),
    ".tensorboard_sink": ("TensorBoardSink",),
    ".transformers_callback": ("UsableInformationTrainerCallback",),
    ".wandb_sink": ("WandbSink",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
