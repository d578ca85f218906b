"""Where researchers already train: a PyTorch Lightning callback (``lightning_callback.py``) and
row sinks for TensorBoard (``tensorboard_sink.py``) and Weights & Biases (``wandb_sink.py``), all
naming their scalars in one place (``scalars.py``).

Lightning, TensorBoard and wandb are optional (the ``[lightning]``, ``[tensorboard]`` and
``[wandb]`` extras); each is imported only by the module that needs it, with a message naming the
extra when it is missing.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "TensorBoardSink": ".tensorboard_sink",
    "UsableInformationCallback": ".lightning_callback",
    "WandbSink": ".wandb_sink",
    "row_scalars": ".scalars",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .lightning_callback import UsableInformationCallback
    from .scalars import row_scalars
    from .tensorboard_sink import TensorBoardSink
    from .wandb_sink import WandbSink
