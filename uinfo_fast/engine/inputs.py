"""The validated inputs of an estimate: features and labels of the train, validation and test
splits, checked once at the public boundary.

Classes are those that occur. Each label set's probes and its baseline cover exactly the classes
present in its train split (the rows the probes are fitted on), numbered 0..K-1 in the order of
their original values (:attr:`Labels.classes`). A class declared by ``num_classes`` or by a
gap in the label values, but absent from the train split, gets no probe column and no share of
the baseline, so it cannot inflate H(Y) or I_u. Validation and test rows whose class does not
occur in the train split cannot be predicted by a probe or by the baseline: they are left out
of the penalty choice and of the score, and the result counts them (``unseen_test_rows``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .validation import check_features, check_labels, feature_sets, label_sets, same_names


@dataclass(frozen=True)
class Features:
    """Validated features: name -> [rows, D] per split (``val`` None when carved from train)."""

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor] | None
    test: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Labels:
    """Validated labels, per label set: class indices into ``classes[name]`` for every split.

    ``train`` holds the rows the probes are fitted on; ``val_seen`` and ``test_seen`` mark the
    rows whose class occurs there (the others hold index 0 and are left out). When the validation
    split was carved out of the train rows, ``carve`` is (fit rows, validation rows) of the train
    features.
    """

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    classes: dict[str, torch.Tensor]
    val_seen: dict[str, torch.Tensor]
    test_seen: dict[str, torch.Tensor]
    carve: tuple[torch.Tensor, torch.Tensor] | None
    test_seen_rows: dict[str, torch.Tensor]  # indices of the test rows scored, per label set
    unseen_test_rows: dict[str, int]         # how many test rows are left out, per label set

    @property
    def names(self) -> list[str]:
        return list(self.train)

    @property
    def num_classes(self) -> dict[str, int]:
        """Classes per label set: those that occur in its train split."""
        return {n: int(c.numel()) for n, c in self.classes.items()}

    def stacked(self, split: str) -> torch.Tensor:
        """The labels of ``split`` ("train", "val" or "test") as one [rows, L] tensor."""
        return torch.stack(list(getattr(self, split).values()), 1)


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


def check_label_splits(labels, test_labels, val_labels, num_classes, rows: Mapping[str, int], device,
                       val_fraction: float, seed: int, *, rows_of: str = "features",
                       train_name: str = "labels") -> Labels:
    """Labels of the three splits, each label set checked once against its split's row count
    (``rows`` by split: "train", "test", "val"), the device and its declared class count; the
    validation split carved from the train rows when no validation labels are given; classes
    renumbered to those of the train split. Errors call the train labels ``train_name``."""
    given = {"train": label_sets(labels, train_name), "test": label_sets(test_labels, "test_labels")}
    if val_labels is not None:
        given["val"] = label_sets(val_labels, "val_labels")
    arg = {"train": train_name, "test": "test_labels", "val": "val_labels"}
    for split, sets in given.items():
        same_names(given["train"], sets, "label sets", train_name, arg[split])
        for n, y in sets.items():
            check_labels(y, f"{arg[split]}[{n!r}]", rows[split], device, rows_of=rows_of)
    declared = _declared_classes(given, num_classes)
    for split, sets in given.items():
        for n, y in sets.items():
            check_labels(y, f"{arg[split]}[{n!r}]", rows[split], device, declared[n], rows_of=rows_of)
    train, val, carve = given["train"], given.get("val"), None
    if val is None:
        carve = tuple(i.to(device) for i in validation_split(rows["train"], val_fraction, seed))
        val = {n: y.index_select(0, carve[1]) for n, y in train.items()}
        train = {n: y.index_select(0, carve[0]) for n, y in train.items()}
    return _compact(train, val, given["test"], carve)


def _declared_classes(given: dict, num_classes) -> dict[str, int]:
    """Declared classes per label set, the range labels must lie in: ``num_classes`` (an int or a
    mapping), else max label + 1 over every split."""
    counts = {}
    for n in given["train"]:
        if isinstance(num_classes, Mapping):
            if n not in num_classes:
                raise ValueError(f"num_classes has no entry for label set {n!r}; it names {sorted(num_classes)}")
            c = num_classes[n]
        else:
            c = num_classes
        if c is None:
            c = max(int(sets[n].max()) for sets in given.values()) + 1
        if not isinstance(c, int) or isinstance(c, bool) or c < 2:
            raise ValueError(f"label set {n!r} needs at least 2 classes, got num_classes={c!r}")
        counts[n] = c
    return counts


def _renumber(y: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each label in ``classes``, 0 where absent; bool mask of the labels present)."""
    idx = torch.searchsorted(classes, y).clamp_(max=classes.numel() - 1)
    seen = classes[idx] == y
    return idx.masked_fill_(~seen, 0), seen


def _compact(train: dict, val: dict, test: dict, carve) -> Labels:
    """Labels renumbered to the classes that occur in each label set's train split."""
    classes, out = {}, {"train": {}, "val": {}, "test": {}, "val_seen": {}, "test_seen": {}}
    for n, y in train.items():
        classes[n] = torch.unique(y)
        if classes[n].numel() < 2:
            raise ValueError(f"label set {n!r} has {classes[n].numel()} class in the train split; a probe needs at "
                             f"least 2")
        out["train"][n] = _renumber(y, classes[n])[0]
        for split, labels in (("val", val), ("test", test)):
            out[split][n], out[f"{split}_seen"][n] = _renumber(labels[n], classes[n])
        if not bool(out["test_seen"][n].any()):
            raise ValueError(f"no test row of label set {n!r} has a class that occurs in the train split")
    rows = {n: seen.nonzero().flatten() for n, seen in out["test_seen"].items()}
    unseen = {n: int(seen.numel() - r.numel()) for (n, seen), r in zip(out["test_seen"].items(), rows.values())}
    return Labels(**out, classes=classes, carve=carve, test_seen_rows=rows, unseen_test_rows=unseen)
