"""The image task: a CIFAR-style ResNet-18 trained on the coarse labels of CIFAR-100 (or of the
built-in CIFAR-100-shaped set), or on groups of the CIFAR-10 classes or of the built-in digits,
probed for its coarse and fine labels at the four stages."""
from __future__ import annotations

import torch

from ..probes import probe_sets
from ..registry import Dataset, Task, TaskData
from . import data, digits
from .data import CIFAR10_STATS, CIFAR100_STATS, DEFAULT_COARSE_GROUPS, augment_batch, check_coarse_groups, normalize
from .digits import DIGITS_STATS
from .resnet import cifar_resnet18


def build(cfg) -> TaskData:
    dataset = TASK.dataset(cfg.dataset)
    device = torch.device(cfg.device)
    train, test = dataset.splits(cfg)

    def prepare(images):
        return normalize(images, dataset.stats)

    def preprocess(images, generator):
        images = images.to(device, non_blocking=True)
        if generator is not None and cfg.augment:
            images = augment_batch(images, generator)
        return prepare(images)

    probes = probe_sets(cfg, TASK, train.images, train.labels(), test.images, test.labels(), prepare=prepare)
    torch.manual_seed(cfg.seed)
    model = cifar_resnet18(num_classes=train.n_coarse, width=cfg.width).to(device)
    layers = TASK.layers_of(cfg)
    return TaskData(train.images, train.coarse, test.images, test.coarse, *probes, model=model, layers=layers,
                    preprocess=preprocess)


def data_tag(cfg) -> str:
    """The dataset's name, with a grouping other than the default spelled out (the classes of
    each group, groups joined by '-': ``cifar10_g09-123-45678``), so that default run
    directories of different groupings differ."""
    if not TASK.dataset(cfg.dataset).grouped:
        return cfg.dataset
    groups = [sorted(g) for g in cfg.coarse_groups or DEFAULT_COARSE_GROUPS]
    if groups == [sorted(g) for g in DEFAULT_COARSE_GROUPS]:
        return cfg.dataset
    # Classes are single digits, so the compact form is unambiguous.
    return f"{cfg.dataset}_g" + "-".join("".join(map(str, g)) for g in groups)


def check(cfg) -> None:
    """``coarse_groups``, when given, must partition the 10 classes of a dataset that groups its
    classes; it is kept as lists, as config.json gives it back, so that a saved config equals
    the one it was made from."""
    if cfg.coarse_groups is None:
        return
    if not TASK.dataset(cfg.dataset).grouped:
        grouped = sorted(d.name for d in TASK.datasets if d.grouped)
        raise ValueError(f"coarse_groups applies to the datasets {grouped} only, got it with dataset {cfg.dataset!r}")
    cfg.coarse_groups = [list(g) for g in check_coarse_groups(cfg.coarse_groups)]


# Loaders look their function up in its module when called, so that a test can swap one.
def _digits(cfg):
    return digits.digit_images(cfg.n_train, cfg.n_test, seed=cfg.seed, coarse_groups=cfg.coarse_groups)


def _synthetic(cfg):
    return data.synthetic_cifar(cfg.n_train, cfg.n_test, seed=cfg.seed)


def _cifar100(cfg):
    return data.load_cifar100(cfg.data_dir, download=cfg.download)


def _cifar10(cfg):
    return data.load_cifar10(cfg.data_dir, download=cfg.download, coarse_groups=cfg.coarse_groups)


# The config's own defaults are the digit set's run. The other datasets keep the short run that
# was the default before it (with CIFAR's crop-and-flip augmentation); the CIFAR-100-shaped
# layouts have 100 fine classes, so their probe sets are larger (PROBE_EXAMPLES_PER_CLASS). The
# synthetic set has CIFAR-100's statistics closely enough to share them.
_SHORT_RUN = dict(epochs=5.0, batch_size=128, lr=0.1, weight_decay=5e-4, lr_schedule="constant", warmup_epochs=0.0,
                  augment=True, track_every=50, early_until=50, early_points=6)
_HUNDRED_CLASSES = dict(probe_train=5_000, probe_val=500, probe_test=1_500)
DATASETS = (
    Dataset("digits", _digits, DIGITS_STATS, grouped=True),
    Dataset("synthetic", _synthetic, CIFAR100_STATS,
            defaults=dict(n_train=10_000, n_test=2_000, **_SHORT_RUN, **_HUNDRED_CLASSES)),
    Dataset("cifar100", _cifar100, CIFAR100_STATS, defaults=dict(**_SHORT_RUN, **_HUNDRED_CLASSES),
            folder=data.CIFAR100_FOLDER),
    Dataset("cifar10", _cifar10, CIFAR10_STATS, grouped=True, defaults=_SHORT_RUN, folder=data.CIFAR10_FOLDER),
)
TASK = Task(name="images", label_sets=("coarse", "fine"), task_label="coarse", irrelevant_label="fine",
            datasets=DATASETS, build=build, data_tag=data_tag, options=("coarse_groups",), check=check,
            beyond={"fine": "coarse"}, default_layers=lambda cfg: ["layer1", "layer2", "layer3", "layer4"])
