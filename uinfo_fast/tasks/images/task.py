"""The image task: a CIFAR-style ResNet-18 trained on the coarse labels of CIFAR-100 (or of the
built-in CIFAR-100-shaped set), probed for its coarse and fine labels at the four stages."""
from __future__ import annotations

import torch

from ..registry import Task, TaskData, probe_sets


def _images(cfg):
    from .data import load_cifar100, synthetic_cifar

    if cfg.dataset == "cifar100":
        if cfg.data_dir is None:
            raise ValueError("dataset 'cifar100' needs data_dir (the directory that holds cifar-100-python/)")
        return load_cifar100(cfg.data_dir, download=cfg.download)
    return synthetic_cifar(cfg.n_train, cfg.n_test, seed=cfg.seed)


def build(cfg) -> TaskData:
    from .data import augment_batch, normalize
    from .resnet import cifar_resnet18

    device = torch.device(cfg.device)
    train, test = _images(cfg)

    def preprocess(images, generator):
        images = images.to(device, non_blocking=True)
        if generator is not None and cfg.augment:
            images = augment_batch(images, generator)
        return normalize(images)

    probes = probe_sets(cfg, TASK, train.images, train.labels(), test.images, test.labels(), prepare=normalize)
    torch.manual_seed(cfg.seed)
    model = cifar_resnet18(num_classes=20, width=cfg.width).to(device)
    layers = cfg.layers or ["layer1", "layer2", "layer3", "layer4"]
    return TaskData(train.images, train.coarse, test.images, test.coarse, *probes, model=model, layers=layers,
                    preprocess=preprocess)


TASK = Task(name="images", label_sets=("coarse", "fine"), task_label="coarse", irrelevant_label="fine",
            datasets=("synthetic", "cifar100"), build=build, data_tag=lambda cfg: cfg.dataset)
