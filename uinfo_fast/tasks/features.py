"""Built-in synthetic features: the embedded default for the demo, the benchmark and examples.

Each feature set plays one layer of a network trained on 20 coarse classes of 100 fine ones:
fine classes share their coarse class's direction and differ in their own, the signal grows with
depth, and the features are ReLU'd like pooled CNN activations. Deterministic for a seed.
"""
from __future__ import annotations

import torch


def layered_features(n_train: int, n_test: int, d: int, n_sets: int, seed: int = 0):
    """Returns (train features, train labels, test features, test labels) as name -> tensor maps:
    features ``layer1``..``layerF`` [N, d] float32, labels ``coarse`` (20) and ``fine`` (100)."""
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    fine = torch.randint(0, 100, (n,), generator=gen)
    coarse = fine // 5
    feats = {}
    for f in range(n_sets):
        proj = torch.randn(64, d, generator=gen) / 8
        coarse_dir = torch.randn(20, 64, generator=gen)
        fine_dir = torch.randn(100, 64, generator=gen)
        z = ((0.6 + 0.4 * f) * coarse_dir[coarse] + (0.5 + 0.2 * f) * fine_dir[fine]
             + 1.5 * torch.randn(n, 64, generator=gen))
        feats[f"layer{f + 1}"] = torch.relu(z @ proj + 0.3 * torch.randn(n, d, generator=gen))
    labels = {"coarse": coarse, "fine": fine}
    return ({k: v[:n_train] for k, v in feats.items()}, {k: v[:n_train] for k, v in labels.items()},
            {k: v[n_train:] for k, v in feats.items()}, {k: v[n_train:] for k, v in labels.items()})
