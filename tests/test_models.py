"""The CIFAR-style ResNet-18: shapes, size, module names for hooks, argument checks."""
import pytest
import torch
import torchvision

from uinfo_fast.tasks.images.resnet import cifar_resnet18, feature_layers


def test_output_shape():
    model = cifar_resnet18(num_classes=20, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 20)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("num_classes,expected", [(20, 11_179_092), (100, 11_220_132)])
def test_standard_width_parameter_count(num_classes, expected):
    model = cifar_resnet18(num_classes=num_classes)
    assert _n_params(model) == expected
    assert abs(_n_params(model) - 11.2e6) / 11.2e6 < 0.01
    # torchvision's ResNet-18 with its 7x7 stem swapped for a 3x3 one has the same parameters.
    reference = torchvision.models.resnet18(num_classes=num_classes)
    assert _n_params(reference) - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 == expected


def test_named_modules_and_hooks():
    model = cifar_resnet18(num_classes=20, width=4).eval()
    modules = dict(model.named_modules())
    for name in ("stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
        assert name in modules
    assert isinstance(modules["stem"], torch.nn.Sequential) and isinstance(modules["stem"][0], torch.nn.Conv2d)
    assert modules["stem"][0].kernel_size == (3, 3) and modules["stem"][0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert feature_layers(model) == ["layer1", "layer2", "layer3", "layer4"]

    shapes = {}
    for name in feature_layers(model):
        modules[name].register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, out.shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert shapes == {"layer1": (2, 4, 32, 32), "layer2": (2, 8, 16, 16),
                      "layer3": (2, 16, 8, 8), "layer4": (2, 32, 4, 4)}


@pytest.mark.parametrize("kwargs,match", [
    ({"width": 0}, "width must be an integer >= 1"),
    ({"width": 2.0}, "width must be an integer >= 1"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"num_classes": True}, "num_classes must be an integer >= 2"),
])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cifar_resnet18(**kwargs)


def test_feature_layers_rejects_other_models():
    with pytest.raises(ValueError, match="no submodule 'layer1'"):
        feature_layers(torch.nn.Linear(2, 2))
