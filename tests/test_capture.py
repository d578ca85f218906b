"""Feature capture on models that are not ours: hooks, pooling, modes, projections, errors."""
import pytest
import torch
import torchvision
from torch import nn

from uinfo_fast.tracking.capture import CaptureOptions, FeatureCapture, eval_mode


def _torchvision_resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def test_hooks_on_a_torchvision_resnet_pool_conv_maps():
    model = _torchvision_resnet()
    x = torch.randn(6, 3, 32, 32)
    feats = FeatureCapture(model, ["layer1", "layer3", "avgpool", "fc"])(x, batch_size=4)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "layer1": (6, 64), "layer3": (6, 256), "avgpool": (6, 512), "fc": (6, 10)}
    # avg pooling of the layer4 map is what the model's own avgpool does
    with torch.no_grad(), eval_mode(model):
        want = model(x)
    torch.testing.assert_close(feats["fc"], want)


def test_capture_restores_modes_and_touches_no_state():
    model = _torchvision_resnet()
    model.train()
    model.layer2.eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    bn_stats = model.bn1.running_mean.clone()
    FeatureCapture(model, ["layer2"])(torch.randn(4, 3, 32, 32))
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(model.bn1.running_mean, bn_stats)  # eval mode: no running-stat update
    assert all(p.grad is None for p in model.parameters())
    assert not model.layer1[0]._forward_hooks  # hooks removed


def test_hooks_removed_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            self.a(x)
            raise RuntimeError("boom")

    model = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        FeatureCapture(model, ["a"])(torch.randn(2, 3))
    assert not model.a._forward_hooks and model.training


def test_max_pool_keeps_a_localised_feature_that_avg_pool_dilutes():
    model = nn.Sequential(nn.Identity())
    x = torch.zeros(2, 3, 16, 16)
    x[0, 1, 4, 7] = 5.0  # one "pixel" of detail in channel 1 of image 0
    mx = FeatureCapture(model, ["0"], pool="max")(x)["0"]
    avg = FeatureCapture(model, ["0"], pool="avg")(x)["0"]
    torch.testing.assert_close(mx, torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(avg[0, 1], torch.tensor(5.0 / 256))


def test_flatten_and_fixed_random_projection():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    x = torch.randn(5, 3, 8, 8)
    cap = FeatureCapture(model, ["0"], pool="flatten", project_to=16, seed=3)
    a, b = cap(x)["0"], cap(x)["0"]
    assert a.shape == (5, 16)
    torch.testing.assert_close(a, b)  # the same projection at every capture
    full = FeatureCapture(model, ["0"], pool="flatten")(x)["0"]
    assert full.shape == (5, 8 * 8 * 8)
    # deterministic for a seed (a fresh capture draws the same projection), different for another
    torch.testing.assert_close(FeatureCapture(model, ["0"], pool="flatten", project_to=16, seed=3)(x)["0"], a)
    assert not torch.allclose(FeatureCapture(model, ["0"], pool="flatten", project_to=16, seed=4)(x)["0"], a)
    # narrower features than project_to pass through unchanged
    assert FeatureCapture(model, ["0"], project_to=16)(x)["0"].shape == (5, 8)


def test_tuple_outputs_take_the_first_element_and_a_sequence_needs_its_layout_stated():
    model = nn.Sequential()
    model.add_module("rnn", nn.GRU(4, 6, batch_first=True))
    x = torch.randn(3, 7, 4)
    # [N, T, H]: averaging "every dimension after the channel one" would keep the tokens and
    # average the hidden units away; the capture refuses to guess, naming the layer and shape
    with pytest.raises(ValueError, match=r"layer 'rnn' gave shape \(3, 7, 6\).*mean_tokens.*layout='channels'"):
        FeatureCapture(model, ["rnn"])(x)
    feats = FeatureCapture(model, ["rnn"], pool="mean_tokens")(x)
    torch.testing.assert_close(feats["rnn"], model(x)[0].mean(1))  # over the tokens: [N, H]
    torch.testing.assert_close(FeatureCapture(model, ["rnn"], layout="tokens")(x)["rnn"], feats["rnn"])
    assert FeatureCapture(model, ["rnn"], layout="channels")(x)["rnn"].shape == (3, 7)  # as stated
    with pytest.raises(ValueError, match="pools tokens"):
        CaptureOptions(pool="first", layout="channels")


def test_autocast_gives_float32_features():
    model = nn.Sequential(nn.Linear(4, 5))
    feats = FeatureCapture(model, ["0"], autocast_dtype=torch.bfloat16)(torch.randn(3, 4))
    assert feats["0"].dtype == torch.float32


def test_bad_layer_name_lists_the_choices():
    model = _torchvision_resnet()
    with pytest.raises(ValueError, match=r"'layer9' is not a module of ResNet.*layer1"):
        FeatureCapture(model, ["layer1", "layer9"])
    with pytest.raises(ValueError, match="at least one"):
        FeatureCapture(model, [])
    with pytest.raises(ValueError, match="pool"):
        FeatureCapture(model, ["layer1"], pool="median")
    with pytest.raises(ValueError, match="project_to"):
        FeatureCapture(model, ["layer1"], project_to=0)


def test_unused_module_is_reported():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = Partial()
    with pytest.raises(RuntimeError, match="never ran"):
        FeatureCapture(model, ["unused"])(torch.randn(2, 2))


# --- batch norms folded into their convolutions (tracking/folding.py) ---------------------------

def _trained_resnet():
    """A torchvision ResNet whose running statistics and affine parameters are not the defaults,
    so that a fold that dropped or misplaced any of them shows."""
    model = _torchvision_resnet()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.3, generator=gen)
        model(torch.randn(16, 3, 32, 32, generator=gen) * 2 + 0.5)  # train mode: running stats move
    return model


LAYERS = ["layer1", "layer2.0.bn1", "layer3", "fc"]


def test_a_folded_capture_reads_the_features_of_the_model_as_it_is_now():
    model = _trained_resnet()
    x = torch.randn(8, 3, 32, 32)
    plain, fold = FeatureCapture(model, LAYERS, fold_batch_norm=False), FeatureCapture(model, LAYERS)
    for _ in range(2):  # the second time after a training step: the copy follows the model
        want, got = plain(x), fold(x)
        for name in LAYERS:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
        model.train()
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        torch.optim.SGD(model.parameters(), lr=0.5).step()
    folded_pairs = fold._folded.pairs
    assert ("conv1", "bn1") in folded_pairs and ("layer1.0.conv2", "layer1.0.bn2") in folded_pairs
    # a captured batch norm is kept as it is, with its convolution
    assert not any("layer2.0.bn1" in pair for pair in folded_pairs)
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.bias is None  # the model is untouched


class _Branching(nn.Module):
    """Control flow on the data: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) if x.sum() > 0 else self.bn(self.conv(-x))


def test_models_a_copy_cannot_stand_in_for_run_as_they_are():
    x = torch.rand(4, 3, 8, 8)
    capture = FeatureCapture(_Branching(), ["bn"])
    assert capture(x)["bn"].shape == (4, 4) and capture._folded is False
    hooked = _trained_resnet()
    seen = []
    hooked.layer1.register_forward_hook(lambda *_: seen.append(1))  # a copy would not call the user's hook
    capture = FeatureCapture(hooked, ["layer2"])
    capture(x.expand(4, 3, 8, 8).contiguous())
    assert capture._folded is False and seen == [1]


def test_a_model_moved_to_another_dtype_is_copied_again():
    model = _trained_resnet()
    capture = FeatureCapture(model, ["layer1"])
    x = torch.randn(2, 3, 32, 32)
    capture(x)
    first = capture._folded
    model.double()
    got = capture(x.double())["layer1"]
    assert capture._folded is not first and capture._folded.copy.conv1.weight.dtype == torch.float64
    torch.testing.assert_close(got, FeatureCapture(model, ["layer1"], fold_batch_norm=False)(x.double())["layer1"])
    head = FeatureCapture(model, ["fc"])
    head(x.double())
    model.fc.weight = nn.Parameter(model.fc.weight * 2)  # replaced, not changed in place: copied again
    torch.testing.assert_close(head(x.double())["fc"], FeatureCapture(model, ["fc"], fold_batch_norm=False)(x.double())["fc"])
