"""The validated features of an estimate (train, validation and test splits), checked once at
the public boundary, and the carving of a validation split out of the train rows. Their labels
are :mod:`~uinfo_fast.engine.labels`'."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .validation import check_features, feature_sets, same_names


@dataclass(frozen=True)
class Features:
    """Validated features: name -> [rows, D] per split (``val`` None when carved from train)."""

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor] | None
    test: dict[str, torch.Tensor]


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, validation rows) of ``n`` train rows: a ``val_fraction`` share, drawn from ``seed``."""
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise ValueError(f"{n} train rows are too few to carve a validation split of fraction {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def check_feature_splits(features, test_features, val_features=None) -> Features:
    """Features of the three splits, each feature set checked once: type, shape, finite values,
    the same width and device in every split."""
    splits = {"features": feature_sets(features, "features"),
              "test_features": feature_sets(test_features, "test_features")}
    if val_features is not None:
        splits["val_features"] = feature_sets(val_features, "val_features")
    for arg, sets in splits.items():
        same_names(splits["features"], sets, "feature sets", "features", arg)
        splits[arg] = {name: check_features(x, f"{arg}[{name!r}]") for name, x in sets.items()}
    train = splits["features"]
    for arg, sets in splits.items():
        _same_rows(sets, arg)
        for name, x in sets.items():
            ref = train[name]
            if x.shape[1] != ref.shape[1] or x.device != ref.device:
                raise ValueError(f"{arg}[{name!r}] has {x.shape[1]} columns on {x.device}, features[{name!r}] has "
                                 f"{ref.shape[1]} on {ref.device}")
    return Features(train, splits.get("val_features"), splits["test_features"])


def _same_rows(sets: dict[str, torch.Tensor], arg: str) -> None:
    """Every feature set of one split describes the same examples, so they have as many rows."""
    first = next(iter(sets))
    for name, x in sets.items():
        if x.shape[0] != sets[first].shape[0]:
            raise ValueError(f"{arg}[{name!r}] has {x.shape[0]} rows but {arg}[{first!r}] has "
                             f"{sets[first].shape[0]}: every feature set of {arg} must hold the same examples")
