"""The image task (``task.py``, which declares its datasets in ``DATASETS``): its data
(``data.py``: the built-in CIFAR-100-shaped set, CIFAR-100 with coarse labels, CIFAR-10 with
coarse groups of its classes, augmentation; ``digits.py``: the digit set) and its network
(``resnet.py``: CIFAR ResNet-18)."""
from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

_EXPORTS = {
    "DATASETS": ".task",
    "TASK": ".task",
    "BatchIterator": ".data",
    "CIFAR10_STATS": ".data",
    "CIFAR100_STATS": ".data",
    "ChannelStats": ".data",
    "DEFAULT_COARSE_GROUPS": ".data",
    "ImageSplit": ".data",
    "augment_batch": ".data",
    "check_coarse_groups": ".data",
    "load_cifar10": ".data",
    "load_cifar100": ".data",
    "normalize": ".data",
    "synthetic_cifar": ".data",
    "DIGITS_STATS": ".digits",
    "digit_images": ".digits",
    "CifarResNet": ".resnet",
    "cifar_resnet18": ".resnet",
    "feature_layers": ".resnet",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .data import (CIFAR10_STATS, CIFAR100_STATS, DEFAULT_COARSE_GROUPS, BatchIterator, ChannelStats, ImageSplit,
                       augment_batch, check_coarse_groups, load_cifar10, load_cifar100, normalize, synthetic_cifar)
    from .digits import DIGITS_STATS, digit_images
    from .resnet import CifarResNet, cifar_resnet18, feature_layers
    from .task import DATASETS, TASK
