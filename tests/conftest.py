import math

import pytest
import torch

from uinfo_fast.engine import cuda_kernels_built

_HAVE_CUDA = torch.cuda.is_available() and cuda_kernels_built()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not _HAVE_CUDA, reason="needs a GPU and the CUDA kernels")),
]


@pytest.fixture(autouse=True)
def checkpoint_every_measurement(monkeypatch):
    """The tests that kill runs count checkpoints: every measurement writes one, whatever the
    machine's speed (a run writes them at most CHECKPOINT_SHARE of its time otherwise; the test
    of that rule sets it back)."""
    from uinfo_fast.experiments import run

    monkeypatch.setattr(run, "CHECKPOINT_SHARE", math.inf)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def random_layout(gen, class_counts, n_label_cols=None):
    """Offsets and label columns for probes with the given class counts, one label column each."""
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    label_col = list(range(len(class_counts))) if n_label_cols is None else [
        int(torch.randint(0, n_label_cols, (1,), generator=gen)) for _ in class_counts]
    return offsets, label_col


def random_labels(gen, n, class_counts):
    return torch.stack([torch.randint(0, c, (n,), generator=gen) for c in class_counts], 1)
