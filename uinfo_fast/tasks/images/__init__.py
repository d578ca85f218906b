"""The image task (``task.py``, which declares its datasets in ``DATASETS``): its data
(``data.py``: the built-in CIFAR-100-shaped set, CIFAR-100 with coarse labels, CIFAR-10 with
coarse groups of its classes, augmentation; ``digits.py``: the digit set) and its network
(``resnet.py``: CIFAR ResNet-18)."""
from ..._lazy import lazy_exports

_EXPORTS = {
    ".task": ("DATASETS", "TASK"),
    ".data": ("CIFAR10_STATS", "CIFAR100_STATS", "ChannelStats", "DEFAULT_COARSE_GROUPS", "ImageSplit",
              "augment_batch", "check_coarse_groups", "load_cifar10", "load_cifar100", "normalize", "synthetic_cifar"),
    ".digits": ("DIGITS_STATS", "digit_images"),
    ".resnet": ("CifarResNet", "cifar_resnet18", "feature_layers"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
