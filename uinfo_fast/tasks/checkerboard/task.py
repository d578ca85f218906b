"""The checkerboard task: a small fully connected network reports the reach direction, probed for
direction, board colour and target configuration at every hidden layer."""
from __future__ import annotations

import functools

import torch

from ..probes import probe_sets
from ..registry import Dataset, Task, TaskData
from .network import CheckerboardNet
from .trials import LEARNABLE_COHERENCES, CheckerboardTrials, make_checkerboard_trials, render_inputs


def _latent(trials: CheckerboardTrials) -> torch.Tensor:
    """What a trial is apart from its noise: [N, 2] (signed coherence, target configuration)."""
    return torch.stack([trials.coherence, trials.targets.float()], dim=1)


def _fresh_inputs(cfg, device):
    """Preprocessing that draws each trial's noise anew from the step's generator (a fixed one
    when there is none: the accuracy of a run is deterministic)."""
    def preprocess(latent, generator):
        gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 17)
        x = render_inputs(latent[:, 0], latent[:, 1].long(), gen, coding=cfg.input_coding)
        return x.to(device, non_blocking=True)

    return preprocess


def _trials(cfg) -> tuple[CheckerboardTrials, CheckerboardTrials]:
    """The (train, test) trials of the config's size, coherences and coding, from its seed."""
    make = functools.partial(make_checkerboard_trials, coherences=tuple(cfg.coherences or LEARNABLE_COHERENCES),
                             coding=cfg.input_coding)
    return make(cfg.n_train, seed=cfg.seed), make(cfg.n_test, seed=cfg.seed + 1_000_003)


def _hidden(cfg) -> tuple[int, ...]:
    return tuple(cfg.hidden or (100, 100))


def build(cfg) -> TaskData:
    device = torch.device(cfg.device)
    train, test = TASK.dataset(cfg.dataset).splits(cfg)
    # Probe inputs are fixed trials, one draw of their noise, with or without fresh training trials.
    probes = probe_sets(cfg, TASK, train.inputs, train.labels(), test.inputs, test.labels())
    torch.manual_seed(cfg.seed)
    model = CheckerboardNet(train.input_dim, hidden=_hidden(cfg)).to(device)
    layers = TASK.layers_of(cfg)
    if cfg.fresh_trials:
        train_x, test_x, preprocess = _latent(train), _latent(test), _fresh_inputs(cfg, device)
    else:
        train_x, test_x = train.inputs, test.inputs
        preprocess = lambda x, _gen: x.to(device, non_blocking=True)  # noqa: E731
    return TaskData(train_x, train.direction, test_x, test.direction, *probes, model=model, layers=layers,
                    preprocess=preprocess)


# The defaults are the configuration that discarded colour in every seed of its grid
# (docs/RESULTS.md, "Four-input coding"): the paper's 10,000 trials (90% train) and small fully
# connected network, the four-input coding of the first author's code with fresh trials, SGD at
# the grid's high learning rate and small batch with weight decay, for 40 epochs.
TASK = Task(name="checkerboard", label_sets=("direction", "colour", "targets"), task_label="direction",
            irrelevant_label="colour", datasets=(Dataset("synthetic", _trials),), build=build,
            data_tag=lambda cfg: "trials",
            defaults=dict(n_train=9_000, n_test=2_000, batch_size=16, lr=0.2, momentum=0.0, weight_decay=5e-3,
                          epochs=40.0, lr_schedule="constant", warmup_epochs=0.0, input_coding="four",
                          fresh_trials=True, probe_train=2_000, probe_val=500, probe_test=1_000, track_every=250,
                          early_until=250, early_points=8, augment=False),
            options=("coherences", "hidden", "input_coding", "fresh_trials"),
            default_layers=lambda cfg: [f"hidden{k}" for k in range(1, len(_hidden(cfg)) + 1)])
