"""The checkerboard task: a small fully connected network reports the reach direction, probed for
direction, board colour and target configuration at every hidden layer."""
from __future__ import annotations

import torch

from ..registry import Task, TaskData, probe_sets
from .network import CheckerboardNet
from .trials import LEARNABLE_COHERENCES, make_checkerboard_trials


def build(cfg) -> TaskData:
    device = torch.device(cfg.device)
    levels = tuple(cfg.coherences or LEARNABLE_COHERENCES)
    train = make_checkerboard_trials(cfg.n_train, seed=cfg.seed, coherences=levels)
    test = make_checkerboard_trials(cfg.n_test, seed=cfg.seed + 1_000_003, coherences=levels)
    probes = probe_sets(cfg, TASK, train.inputs, train.labels(), test.inputs, test.labels())
    torch.manual_seed(cfg.seed)
    model = CheckerboardNet(train.inputs.shape[1]).to(device)
    layers = cfg.layers or [n for n, _ in model.named_children() if n.startswith("hidden")]
    return TaskData(train.inputs, train.direction, test.inputs, test.direction, *probes, model=model, layers=layers,
                    preprocess=lambda x, _gen: x.to(device, non_blocking=True))


# The defaults follow the paper's quoted configuration: 10,000 trials (90% train), batch 32,
# learning rate 0.05, a small fully connected network.
TASK = Task(name="checkerboard", label_sets=("direction", "colour", "targets"), task_label="direction",
            irrelevant_label="colour", datasets=("synthetic",), build=build, data_tag=lambda cfg: "trials",
            defaults=dict(n_train=9_000, n_test=2_000, batch_size=32, lr=0.05, momentum=0.0, weight_decay=0.0,
                          epochs=20.0, probe_train=2_000, probe_val=500, probe_test=1_000, track_every=250,
                          early_until=250, early_points=8, augment=False))
