"""The image task: a CIFAR-style ResNet-18 trained on the coarse labels of CIFAR-100 (or of the
built-in CIFAR-100-shaped set), or on groups of the CIFAR-10 classes or of the built-in digits,
probed for its coarse and fine labels at the four stages."""
from __future__ import annotations

import torch

from ..probes import probe_sets
from ..registry import Task, TaskData


def _images(cfg):
    from .data import CIFAR10_FOLDER, CIFAR100_FOLDER, load_cifar10, load_cifar100, synthetic_cifar

    folder = {"cifar100": CIFAR100_FOLDER, "cifar10": CIFAR10_FOLDER}.get(cfg.dataset)
    if folder is not None and cfg.data_dir is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_dir (the directory that holds {folder}/)")
    if cfg.dataset == "cifar100":
        return load_cifar100(cfg.data_dir, download=cfg.download)
    if cfg.dataset == "cifar10":
        return load_cifar10(cfg.data_dir, download=cfg.download, coarse_groups=cfg.coarse_groups)
    if cfg.dataset == "digits":
        from .digits import digit_images

        return digit_images(cfg.n_train, cfg.n_test, seed=cfg.seed, coarse_groups=cfg.coarse_groups)
    return synthetic_cifar(cfg.n_train, cfg.n_test, seed=cfg.seed)


def build(cfg) -> TaskData:
    from .data import CIFAR10_STATS, CIFAR100_STATS, augment_batch, normalize
    from .resnet import cifar_resnet18

    device = torch.device(cfg.device)
    from .digits import DIGITS_STATS

    train, test = _images(cfg)
    stats = {"cifar10": CIFAR10_STATS, "digits": DIGITS_STATS}.get(cfg.dataset, CIFAR100_STATS)

    def prepare(images):
        return normalize(images, stats)

    def preprocess(images, generator):
        images = images.to(device, non_blocking=True)
        if generator is not None and cfg.augment:
            images = augment_batch(images, generator)
        return prepare(images)

    probes = probe_sets(cfg, TASK, train.images, train.labels(), test.images, test.labels(), prepare=prepare)
    torch.manual_seed(cfg.seed)
    model = cifar_resnet18(num_classes=train.n_coarse, width=cfg.width).to(device)
    layers = cfg.layers or ["layer1", "layer2", "layer3", "layer4"]
    return TaskData(train.images, train.coarse, test.images, test.coarse, *probes, model=model, layers=layers,
                    preprocess=preprocess)


def data_tag(cfg) -> str:
    """The dataset's name, with a CIFAR-10 grouping other than the default spelled out (the classes
    of each group, groups joined by '-': ``cifar10_g09-123-45678``), so that default run
    directories of different groupings differ."""
    from .data import DEFAULT_COARSE_GROUPS, GROUPED_DATASETS

    if cfg.dataset not in GROUPED_DATASETS:
        return cfg.dataset
    groups = [sorted(g) for g in cfg.coarse_groups or DEFAULT_COARSE_GROUPS]
    if groups == [sorted(g) for g in DEFAULT_COARSE_GROUPS]:
        return cfg.dataset
    # Classes are single digits, so the compact form is unambiguous.
    return f"{cfg.dataset}_g" + "-".join("".join(map(str, g)) for g in groups)


# The config's own defaults are the digit set's run. The other datasets keep the short run that
# was the default before it (with CIFAR's crop-and-flip augmentation); the CIFAR-100-shaped
# layouts have 100 fine classes, so their probe sets are larger (PROBE_EXAMPLES_PER_CLASS).
_SHORT_RUN = dict(epochs=5.0, batch_size=128, lr=0.1, weight_decay=5e-4, lr_schedule="constant", warmup_epochs=0.0,
                  augment=True, track_every=50, early_until=50, early_points=6)
_HUNDRED_CLASSES = dict(probe_train=5_000, probe_val=500, probe_test=1_500)
TASK = Task(name="images", label_sets=("coarse", "fine"), task_label="coarse", irrelevant_label="fine",
            datasets=("digits", "synthetic", "cifar100", "cifar10"), build=build, data_tag=data_tag,
            dataset_defaults={"synthetic": dict(n_train=10_000, n_test=2_000, **_SHORT_RUN, **_HUNDRED_CLASSES),
                              "cifar100": dict(**_SHORT_RUN, **_HUNDRED_CLASSES), "cifar10": _SHORT_RUN},
            options=("coarse_groups",), beyond={"fine": "coarse"})
