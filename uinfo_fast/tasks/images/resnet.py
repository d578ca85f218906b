"""Networks for the experiments: a CIFAR-style ResNet-18 with a width option.

The submodules have stable names (``stem``, ``layer1``..``layer4``, ``avgpool``, ``fc``) so that
features can be captured with forward hooks, e.g. on ``dict(model.named_modules())["layer2"]``.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ...engine.params import Integer, check_param

_STAGES = ("layer1", "layer2", "layer3", "layer4")


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem and no max-pool (32x32 inputs keep their resolution in the
    first stage), stages of :class:`torchvision.models.resnet.BasicBlock` with ``width * 2**i``
    channels, global average pooling and a linear head."""

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), num_classes: int = 20, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        in_ch = width
        for i, (name, n_blocks) in enumerate(zip(_STAGES, blocks_per_stage)):
            out_ch, stride = width * 2 ** i, 1 if i == 0 else 2
            setattr(self, name, self._stage(in_ch, out_ch, n_blocks, stride))
            in_ch = out_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        # torchvision's ResNet initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_ch != out_ch:
            # Projection shortcut where the residual's shape changes.
            downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_ch))
        blocks = [BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)]
        blocks += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet18(num_classes: int = 20, width: int = 64) -> CifarResNet:
    """CIFAR-style ResNet-18: 3x3 stem, four stages of two BasicBlocks with ``width``, ``2 width``,
    ``4 width`` and ``8 width`` channels (strides 1, 2, 2, 2), global average pool, linear head.

    ``width=64`` is the standard ResNet-18 (about 11.2M parameters); width 8 or 16 (about 0.18M
    or 0.7M) trains on a CPU.
    """
    check_param("num_classes", num_classes, Integer(2))
    check_param("width", width, Integer(1))
    return CifarResNet((2, 2, 2, 2), num_classes=num_classes, width=width)


def feature_layers(model: nn.Module) -> list[str]:
    """The layers probed by default: the four stage outputs. The ``layer4`` output, pooled, is the
    penultimate representation (the input of ``fc``)."""
    names = dict(model.named_modules())
    missing = [name for name in _STAGES if name not in names]
    if missing:
        raise ValueError(f"model has no submodule {', '.join(repr(m) for m in missing)}; "
                         f"expected a model from cifar_resnet18")
    return list(_STAGES)
