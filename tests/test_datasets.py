"""Image data: the synthetic set, CIFAR-100 and CIFAR-10 loading (from tiny archives in the real
format), batch augmentation and the batch iterator."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uinfo_fast.tasks.images import (CIFAR10_STATS, DEFAULT_COARSE_GROUPS, DIGITS_STATS, ImageSplit, augment_batch,
                                     load_cifar10, load_cifar100, normalize, synthetic_cifar)
from uinfo_fast.tasks.images.data import BatchIterator

from .cifar_archive import (FOLDER10, TRAIN_BATCHES10, coarse_of_fine, read_entry, write_tiny_cifar10,
                            write_tiny_cifar100)


@pytest.fixture(scope="module")
def synth():
    return synthetic_cifar(3000, 1000, seed=0)


# --- ImageSplit -------------------------------------------------------------------------------

def _split(n=4):
    return ImageSplit(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n) % 20, torch.arange(n) % 100)


def test_image_split_basics():
    s = _split(6)
    assert len(s) == 6
    assert set(s.labels()) == {"coarse", "fine"}
    sub = s.subset(torch.tensor([4, 1]))
    assert len(sub) == 2 and sub.fine.tolist() == [4, 1]
    assert s.subset([0, 2]).coarse.tolist() == [0, 2]
    assert len(s.subset(slice(0, 3))) == 3


def test_image_split_class_counts_are_kept_and_checked():
    s = ImageSplit(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 1]), torch.tensor([0, 5, 9]),
                   n_coarse=2, n_fine=10)
    sub = s.subset([2])
    assert (sub.n_coarse, sub.n_fine) == (2, 10)
    with pytest.raises(ValueError, match=r"coarse must lie in \[0, 2\)"):
        ImageSplit(s.images, torch.tensor([0, 1, 2]), s.fine, n_coarse=2, n_fine=10)
    with pytest.raises(ValueError, match="n_fine"):
        ImageSplit(s.images, s.coarse, s.fine, n_coarse=2, n_fine=0)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"images": torch.zeros(4, 3, 32, 32)}, TypeError, "images must be uint8"),
    ({"images": np.zeros((4, 3, 32, 32), np.uint8)}, TypeError, "images must be a torch.Tensor"),
    ({"images": torch.zeros(4, 32, 32, 3, dtype=torch.uint8)}, ValueError, r"images must have shape \[N, 3, 32, 32\]"),
    ({"coarse": torch.zeros(3, dtype=torch.int64)}, ValueError, r"coarse must have shape \[4\]"),
    ({"fine": torch.zeros(4, dtype=torch.int32)}, TypeError, "fine must be int64"),
    ({"coarse": torch.full((4,), 20)}, ValueError, r"coarse must lie in \[0, 20\)"),
    ({"fine": torch.full((4,), -1)}, ValueError, r"fine must lie in \[0, 100\)"),
])
def test_image_split_rejects(kwargs, exc, match):
    args = {"images": torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "coarse": torch.zeros(4, dtype=torch.int64),
            "fine": torch.zeros(4, dtype=torch.int64), **kwargs}
    with pytest.raises(exc, match=match):
        ImageSplit(**args)


# --- synthetic set ----------------------------------------------------------------------------

def test_synthetic_shapes_and_labels(synth):
    for split, n in zip(synth, (3000, 1000)):
        assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.coarse.dtype == torch.int64 and split.fine.dtype == torch.int64
        assert torch.equal(split.fine // 5, split.coarse)
        counts = torch.bincount(split.fine, minlength=100)
        assert counts.min() == counts.max() == n // 100
    # Images use the range and are not constant.
    assert synth[0].images.float().std() > 30


def test_synthetic_balance_with_remainder():
    train, test = synthetic_cifar(250, 7, seed=3)
    counts = torch.bincount(train.fine, minlength=100)
    assert counts.min() == 2 and counts.max() == 3 and counts.sum() == 250
    assert len(test) == 7 and len(torch.unique(test.fine)) == 7


def test_synthetic_deterministic():
    a, b, c = (synthetic_cifar(300, 100, seed=s) for s in (5, 5, 6))
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.fine, y.fine)
    assert not torch.equal(a[0].images, c[0].images)
    assert not torch.equal(a[0].images[:100], a[1].images)  # train and test are different draws


def test_synthetic_does_not_touch_global_rng():
    state = torch.random.get_rng_state()
    synthetic_cifar(10, 10, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


def test_synthetic_shared_details():
    # The same samples drawn, only the detail pattern differs for coarse classes other than 0.
    own, _ = synthetic_cifar(500, 0, seed=2)
    shared, _ = synthetic_cifar(500, 0, seed=2, shared_details=True)
    assert torch.equal(own.fine, shared.fine)
    first = own.coarse == 0
    assert torch.equal(own.images[first], shared.images[first])
    assert not torch.equal(own.images[~first], shared.images[~first])


@pytest.mark.parametrize("kwargs", [{"n_train": -1}, {"n_test": 2.5}])
def test_synthetic_rejects(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        synthetic_cifar(**kwargs)


def _linear_probe(x_train, y_train, x_test, num_classes):
    """Predictions of an L2-regularised softmax regression on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(x_train.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ w + b, y_train) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (x_test @ w + b).argmax(1)


@pytest.mark.slow
def test_synthetic_learnable(synth):
    """A linear probe on 8x8 thumbnails: the coarse class is far above chance (5%), and so is the
    fine class among images whose coarse class it gets right (chance 20%)."""
    train, test = synth
    x_train, x_test = (F.avg_pool2d(s.images.float() / 255, 4).flatten(1) for s in (train, test))
    coarse_pred = _linear_probe(x_train, train.coarse, x_test, 20)
    assert (coarse_pred == test.coarse).float().mean() > 0.8
    fine_pred = _linear_probe(x_train, train.fine, x_test, 100)
    right_coarse = fine_pred // 5 == test.coarse
    assert right_coarse.float().mean() > 0.8
    assert (fine_pred == test.fine)[right_coarse].float().mean() > 0.25


@pytest.mark.slow
def test_synthetic_details_visible_to_conv_features(synth):
    """The fine details are textures: random zero-mean 5x5 filters, ReLU and a global max-pool (a
    stand-in for a first conv layer) make the fine class linearly decodable."""
    train, test = synth
    weight = torch.randn(32, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    weight -= weight.mean(dim=(1, 2, 3), keepdim=True)  # respond to texture, not to mean colour

    def features(split):
        return F.adaptive_max_pool2d(F.relu(F.conv2d(normalize(split.images), weight, padding=2)), 1).flatten(1)

    fine_pred = _linear_probe(features(train), train.fine, features(test), 100)
    right_coarse = fine_pred // 5 == test.coarse
    assert (fine_pred == test.fine)[right_coarse].float().mean() > 0.6


# --- CIFAR-100 --------------------------------------------------------------------------------

def test_load_cifar100_tiny_archive(tmp_path):
    root = write_tiny_cifar100(tmp_path, n_train=50, n_test=20)
    train, test = load_cifar100(str(root), verify=False)
    for split, name, n in ((train, "train", 50), (test, "test", 20)):
        entry = read_entry(root, name)
        assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert torch.equal(split.images, torch.from_numpy(entry["data"]).reshape(n, 3, 32, 32))
        assert split.fine.tolist() == entry["fine_labels"]
        assert split.coarse.tolist() == entry["coarse_labels"]
        assert torch.equal(split.coarse, torch.from_numpy(coarse_of_fine())[split.fine])
    # The first pixel of the first image: row 0 of the data is the R plane, then G, then B.
    data = read_entry(root, "train")["data"]
    assert train.images[0, :, 0, 0].tolist() == [data[0, 0], data[0, 1024], data[0, 2048]]


# The tiny files are not the real ones: with verification on they are rejected.
_CIFARS = [(lambda root: write_tiny_cifar100(root, n_train=5, n_test=5), load_cifar100, "meta"),
           (lambda root: write_tiny_cifar10(root, n_per_batch=2, n_test=2), load_cifar10, "test_batch")]


@pytest.mark.parametrize("write, load, _", _CIFARS, ids=["cifar100", "cifar10"])
def test_load_cifar_verifies_checksums(tmp_path, write, load, _):
    with pytest.raises(RuntimeError, match="MD5"):
        load(write(tmp_path))


@pytest.mark.parametrize("write, load, a_file", _CIFARS, ids=["cifar100", "cifar10"])
def test_load_cifar_missing(tmp_path, write, load, a_file):
    missing = tmp_path / "no_cifar_here"
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load(missing)
    assert str(missing) in str(info.value) and a_file in str(info.value)


# --- CIFAR-10 ---------------------------------------------------------------------------------

def _read_cifar10(root, names):
    entries = [read_entry(root, name, FOLDER10) for name in names]
    data = np.concatenate([e["data"] for e in entries])
    return torch.from_numpy(data).reshape(-1, 3, 32, 32), [c for e in entries for c in e["labels"]]


@pytest.mark.parametrize("groups", [None, ((0, 9), (1, 2, 3), (4, 5, 6, 7, 8))])
def test_load_cifar10_tiny_archive(tmp_path, groups):
    root = write_tiny_cifar10(tmp_path, n_per_batch=12, n_test=20)
    train, test = load_cifar10(str(root), verify=False, coarse_groups=groups)
    expected = DEFAULT_COARSE_GROUPS if groups is None else groups
    group_of = {c: i for i, g in enumerate(expected) for c in g}
    # All five training batches, concatenated in order.
    for split, names in ((train, TRAIN_BATCHES10), (test, ["test_batch"])):
        images, labels = _read_cifar10(root, names)
        assert split.images.dtype == torch.uint8 and torch.equal(split.images, images)
        assert split.fine.tolist() == labels
        assert split.coarse.tolist() == [group_of[c] for c in labels]
        assert (split.n_coarse, split.n_fine) == (len(expected), 10)
    assert len(train) == 60 and len(test) == 20
    # The first pixel of the first image: row 0 of the data is the R plane, then G, then B.
    data = read_entry(root, "data_batch_1", FOLDER10)["data"]
    assert train.images[0, :, 0, 0].tolist() == [data[0, 0], data[0, 1024], data[0, 2048]]




@pytest.mark.parametrize("groups,problem", [
    ([[0, 1, 2, 3], [5, 6, 7, 8, 9]], r"missing: \[4\]"),
    ([[0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]], r"repeated: \[4\]"),
    ([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]], r"out of range: \[10\]"),
    ([list(range(10))], "fewer than 2"),
    ([list(range(10)), []], "group 1 is empty"),
    ([[0, 1, 2, 3, 4], "56789"], "list of lists of ints"),
])
def test_load_cifar10_rejects_bad_groupings(tmp_path, groups, problem):
    # Checked before any file is read: the directory need not hold CIFAR-10.
    with pytest.raises(ValueError, match=f"coarse_groups must be a partition.*{problem}"):
        load_cifar10(tmp_path, coarse_groups=groups)


def test_cifar10_task_trains_on_the_groups_and_normalises_with_cifar10_stats(tmp_path, monkeypatch):
    import functools

    from uinfo_fast.experiments import RunConfig
    from uinfo_fast.tasks.images import TASK, data

    root = write_tiny_cifar10(tmp_path, n_per_batch=8, n_test=20)
    # Runs verify the MD5 sums of the real archive; the tiny one is read without that check.
    monkeypatch.setattr(data, "load_cifar10", functools.partial(data.load_cifar10, verify=False))
    groups = [[0, 9], [1, 2, 3], [4, 5, 6, 7, 8]]
    cfg = RunConfig(dataset="cifar10", data_dir=str(root), coarse_groups=groups, width=2, probe_train=30,
                    probe_val=5, probe_test=10)
    task = TASK.build(cfg)
    train, _ = data.load_cifar10(root, coarse_groups=groups)
    assert torch.equal(task.train_x, train.images) and torch.equal(task.train_y, train.coarse)
    assert task.model(task.preprocess(task.train_x[:4], None)).shape == (4, 3)
    assert torch.allclose(task.preprocess(task.train_x, None), normalize(train.images, CIFAR10_STATS))
    assert set(task.probe_train_labels) == {"coarse", "fine"} and int(task.probe_train_labels["fine"].max()) < 10
    assert TASK.data_tag(cfg) == "cifar10_g09-123-45678"
    assert TASK.data_tag(RunConfig(dataset="cifar10", data_dir="d")) == "cifar10"
    with pytest.raises(ValueError, match="needs data_dir.*cifar-10-batches-py"):
        TASK.build(RunConfig(dataset="cifar10"))


def test_normalize_with_cifar10_stats():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    mean, std = torch.tensor((0.4914, 0.4822, 0.4465)), torch.tensor((0.2470, 0.2435, 0.2616))
    expected = (torch.tensor([0.0, 128 / 255, 1.0]) - mean) / std
    assert torch.allclose(normalize(images, CIFAR10_STATS)[1, :, 3, 3], expected)
    as_pair = (tuple(mean.tolist()), tuple(std.tolist()))
    assert torch.allclose(normalize(images, as_pair), normalize(images, CIFAR10_STATS))
    with pytest.raises(ValueError, match="stats must be"):
        normalize(images, ((0.5, 0.5), (0.2, 0.2)))


# --- augmentation and batches -----------------------------------------------------------------

def test_augment_batch_shape_and_determinism(synth):
    images = synth[0].images[:64]
    out1 = augment_batch(images, torch.Generator().manual_seed(0))
    out2 = augment_batch(images, torch.Generator().manual_seed(0))
    out3 = augment_batch(images, torch.Generator().manual_seed(1))
    assert out1.shape == images.shape and out1.dtype == torch.uint8
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    changed = (out1 != images).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # 1/81 crops are centred, half of those not flipped


def test_augment_batch_is_crop_and_flip():
    # Each output is a 32x32 window of the zero-padded image, possibly mirrored.
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=gen)
    out = augment_batch(images, gen)
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(len(images)):
        candidates = [padded[i, :, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_augment_batch_constant_image():
    images = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0, 200}
    assert (out == 0).any() and (out == 200).flatten(1).sum(1).min() >= 3 * 28 * 28


def test_augment_batch_rejects():
    with pytest.raises(TypeError, match="images must be uint8"):
        augment_batch(torch.zeros(2, 3, 32, 32), torch.Generator())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        augment_batch(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 0)


def test_normalize():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    mean, std = torch.tensor((0.5071, 0.4865, 0.4409)), torch.tensor((0.2673, 0.2564, 0.2762))
    expected = (torch.tensor([0.0, 128 / 255, 1.0]) - mean) / std
    assert torch.allclose(out[0, :, 0, 0], expected)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_iterator_epoch(drop_last):
    n = 103
    split = ImageSplit(torch.arange(n).view(n, 1, 1, 1).expand(n, 3, 32, 32).to(torch.uint8),
                       torch.arange(n) % 20, torch.arange(n) % 100)
    it = BatchIterator(split, 10, drop_last=drop_last, generator=torch.Generator().manual_seed(0))
    assert len(it) == (10 if drop_last else 11)
    seen = []
    for x, coarse, fine in it:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        ids = torch.round((x[:, 0, 0, 0] * 0.2673 + 0.5071) * 255).long()  # undo normalize
        assert torch.equal(ids % 20, coarse) and torch.equal(ids % 100, fine)
        seen += ids.tolist()
    if drop_last:
        assert len(seen) == 100 and len(set(seen)) == 100
    else:
        assert sorted(seen) == list(range(n))
    assert seen != sorted(seen)  # shuffled


def test_batch_iterator_deterministic_and_augments(synth):
    split = synth[1].subset(slice(0, 64))

    def epochs(seed):
        it = BatchIterator(split, 16, augment=True, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([x for x, _, _ in it]) for _ in range(2)]

    a, b = epochs(0), epochs(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # a new order and new crops in the next epoch
    plain = torch.cat([x for x, _, _ in BatchIterator(split, 16, shuffle=False)])
    assert torch.equal(plain, normalize(split.images))


def test_batch_iterator_rejects():
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(_split(), 0)
    with pytest.raises(TypeError, match="split must be an ImageSplit"):
        BatchIterator(torch.zeros(4, 3, 32, 32), 2)


# --- the digit set (fine classes that are shapes) -----------------------------------------------

def test_digit_images_are_deterministic_balanced_and_grouped():
    from uinfo_fast.tasks.images import digit_images

    (a, _), (b, _), (c, _) = (digit_images(500, 10, seed=s) for s in (3, 3, 4))
    assert a.images.shape == (500, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.fine, b.fine) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.fine).tolist() == [50] * 10 and (a.n_coarse, a.n_fine) == (2, 10)
    assert torch.equal(a.coarse, (a.fine >= 5).long())
    grouped, _ = digit_images(100, 10, seed=3, coarse_groups=[[0, 9], [1, 2, 3], [4, 5, 6, 7, 8]])
    assert grouped.n_coarse == 3 and grouped.coarse[grouped.fine == 9].eq(0).all()
    with pytest.raises(ValueError, match="coarse_groups"):
        digit_images(10, 10, coarse_groups=[[0, 1]])


def _digit_information(model, train, test, layers):
    import uinfo_fast as uf

    capture = uf.FeatureCapture(model, layers)
    feats = capture(normalize(torch.cat([train.images, test.images]), DIGITS_STATS), 256)
    n = len(train)
    res = uf.estimate_usable_information({k: v[:n] for k, v in feats.items()}, {"fine": train.fine},
                                         {k: v[n:] for k, v in feats.items()}, {"fine": test.fine}, n_bootstrap=0)
    return {layer: res[layer, "fine"] for layer in layers}


def test_digit_classes_are_shapes_a_random_network_cannot_read():
    from uinfo_fast.tasks.images import cifar_resnet18, digit_images

    train, test = digit_images(1000, 500, seed=5)  # 100 probe images per digit
    torch.manual_seed(0)
    got = _digit_information(cifar_resnet18(num_classes=2, width=8), train, test,
                             ["layer1", "layer2", "layer3", "layer4"])
    for layer, r in got.items():
        assert r.bits < 0.25 * r.entropy_bits, (layer, r.bits)


@pytest.mark.slow
def test_digit_classes_are_learnable():
    from uinfo_fast.tasks.images import cifar_resnet18, digit_images

    train, test = digit_images(5000, 1000, seed=6)
    torch.manual_seed(0)
    model = cifar_resnet18(num_classes=10, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, gen = normalize(train.images, DIGITS_STATS), torch.Generator().manual_seed(0)
    for _ in range(6):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), train.fine[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    r = _digit_information(model, train.subset(slice(0, 2000)), test, ["layer4"])["layer4"]
    assert r.bits > 0.6 * r.entropy_bits, r.bits
