"""Label and class rules, in one place: what a label argument may be, how many classes each label
set declares, and how labels are renumbered to the classes a probe was fitted on.

Classes are those that occur. Each label set's probes and its baseline cover exactly the classes
present in its train split (the rows the probes are fitted on), numbered 0..K-1 in the order of
their original values (:attr:`Labels.classes`). A class declared by ``num_classes`` or by a
gap in the label values, but absent from the train split, gets no probe column and no share of
the baseline, so it cannot inflate H(Y) or I_u. Validation and test rows whose class does not
occur in the train split cannot be predicted by a probe or by the baseline: they are left out
of the penalty choice and of the score, and the result counts them (``unseen_test_rows``).
:func:`fit_probes <uinfo_fast.engine.fit.fit_probes>` takes class indices as given
(:func:`checked_label_sets`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .inputs import validation_split
from .validation import same_names

# The name of a label set given as a bare tensor, by the estimator, the tracker and the callback alike.
BARE_LABEL = "label"


def label_sets(labels, name: str) -> dict[str, torch.Tensor]:
    """A tensor [N] (one label set, :data:`BARE_LABEL`), [N, L] (``label0``, ``label1``, ...), a
    sequence of [N] tensors (the same) or a name -> [N] mapping."""
    if isinstance(labels, Mapping):
        sets = dict(labels)
    elif isinstance(labels, torch.Tensor) and labels.dim() == 2:
        sets = {f"{BARE_LABEL}{j}": labels[:, j] for j in range(labels.shape[1])}
    elif isinstance(labels, torch.Tensor):
        sets = {BARE_LABEL: labels}
    elif isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        if labels and not isinstance(labels[0], torch.Tensor):
            raise TypeError(f"{name} must be int64 tensors, got a {type(labels).__name__} of "
                            f"{type(labels[0]).__name__}; wrap class indices in torch.tensor(...)")
        sets = {f"{BARE_LABEL}{j}": y for j, y in enumerate(labels)}
    else:
        raise TypeError(f"{name} must be a tensor, a sequence of tensors or a mapping name -> tensor, "
                        f"got {type(labels).__name__}")
    if not sets:
        raise ValueError(f"{name} is empty: give at least one label set")
    return sets


def check_labels(y, name: str, n_rows: int, device: torch.device, num_classes: int | None = None, *,
                 rows_of: str = "features") -> torch.Tensor:
    """``y`` as int64 class indices [n_rows] on ``device`` in [0, num_classes); ``rows_of`` names
    what the rows must match in the message ("features", or "inputs" for the tracker)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 class indices, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 class indices, got {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(y.shape)}")
    if y.shape[0] != n_rows:
        unit = "rows" if rows_of == "features" else "labels"
        raise ValueError(f"{name} has {y.shape[0]} {unit} but the {rows_of} have {n_rows}")
    if y.device != device:
        raise ValueError(f"{name} is on {y.device} but the {rows_of} are on {device}")
    if num_classes is not None and y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}), found values in [{lo}, {hi}]")
    return y


def declared_classes(names: list[str], num_classes, observed: Callable[[str], int]) -> list[int]:
    """The classes each label set declares, the range its labels must lie in: ``num_classes`` (an
    int, one per label set in a sequence, or a mapping by name), else ``observed(name)`` (max
    label + 1 over the labels given); at least 2."""
    if num_classes is None or isinstance(num_classes, int):
        counts = [num_classes] * len(names)
    elif isinstance(num_classes, Mapping):
        missing = [n for n in names if n not in num_classes]
        if missing:
            raise ValueError(f"num_classes has no entry for the label sets {missing}; it names {sorted(num_classes)}")
        counts = [num_classes[n] for n in names]
    else:
        counts = list(num_classes)
        if len(counts) != len(names):
            raise ValueError(f"num_classes has {len(counts)} entries but there are {len(names)} label sets")
    counts = [observed(n) if c is None else c for n, c in zip(names, counts)]
    for n, c in zip(names, counts):
        if not isinstance(c, int) or isinstance(c, bool) or c < 2:
            raise ValueError(f"label set {n!r} needs at least 2 classes, got num_classes={c!r}")
    return counts


@dataclass(frozen=True)
class ClassSets:
    """What a fit's probes predict: the label sets' ``names``, their class ``counts``, and (fits
    made by the estimator) the original class value of each probe column of each label set
    (``classes``), by which labels given later are renumbered (:func:`fit_label_columns`). None:
    labels are class indices already."""

    names: list[str]
    counts: list[int]
    classes: list[torch.Tensor] | None = field(default=None, repr=False)


def renumber(y: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each label in ``classes`` (sorted), 0 where absent; bool mask of the labels present)."""
    idx = torch.searchsorted(classes, y).clamp_(max=classes.numel() - 1)
    seen = classes[idx] == y
    return idx.masked_fill_(~seen, 0), seen


# ---------------------------------------------------------------------------------------------
# fit_probes and the fits' own scoring


def checked_label_sets(labels, num_classes, x) -> tuple[list[str], list[int], torch.Tensor]:
    """(names, class counts, labels stacked [N, L]) of fit_probes' label sets, validated."""
    sets = label_sets(labels, "labels")
    names = list(sets)
    for n in names:
        check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device)
    counts = declared_classes(names, num_classes, lambda n: int(sets[n].max()) + 1)
    cols = [check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device, c) for n, c in zip(names, counts)]
    return names, counts, torch.stack(cols, 1)


def fit_label_columns(fit, labels, x: torch.Tensor) -> torch.Tensor:
    """``labels`` stacked [M, L] in ``fit``'s label-set order, as the class indices its probes
    use (renumbered when the fit records its ``classes``), for the validated features ``x``."""
    sets = label_sets(labels, "labels")
    if not isinstance(labels, Mapping) and len(sets) == len(fit.label_names):
        # Unnamed label sets (a tensor or a list) are taken in the order the probes were fitted.
        sets = dict(zip(fit.label_names, sets.values()))
    missing = [n for n in fit.label_names if n not in sets]
    if missing:
        raise ValueError(f"labels lack the label sets {missing} that the probes predict")
    cols = []
    for j, n in enumerate(fit.label_names):
        if fit.classes is None:
            cols.append(check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device, fit.num_classes[j]))
            continue
        idx, seen = renumber(check_labels(sets[n], f"labels[{n!r}]", x.shape[0], x.device), fit.classes[j])
        if not bool(seen.all()):
            raise ValueError(f"labels[{n!r}] holds classes the probes were not fitted on; they know "
                             f"{fit.classes[j].tolist()}")
        cols.append(idx)
    return torch.stack(cols, 1)


# ---------------------------------------------------------------------------------------------
# The estimator's three splits


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
    names = list(given["train"])
    declared = dict(zip(names, declared_classes(
        names, num_classes, lambda n: max(int(sets[n].max()) for sets in given.values()) + 1)))
    for split, sets in given.items():
        for n, y in sets.items():
            check_labels(y, f"{arg[split]}[{n!r}]", rows[split], device, declared[n], rows_of=rows_of)
    train, val, carve = given["train"], given.get("val"), None
    if val is None:
        carve = tuple(i.to(device) for i in validation_split(rows["train"], val_fraction, seed))
        val = {n: y.index_select(0, carve[1]) for n, y in train.items()}
        train = {n: y.index_select(0, carve[0]) for n, y in train.items()}
    return _compact(train, val, given["test"], carve)


def _compact(train: dict, val: dict, test: dict, carve) -> Labels:
    """Labels renumbered to the classes that occur in each label set's train split."""
    classes, out = {}, {"train": {}, "val": {}, "test": {}, "val_seen": {}, "test_seen": {}}
    for n, y in train.items():
        classes[n] = torch.unique(y)
        if classes[n].numel() < 2:
            raise ValueError(f"label set {n!r} has {classes[n].numel()} class in the train split; a probe needs at "
                             f"least 2")
        out["train"][n] = renumber(y, classes[n])[0]
        for split, labels in (("val", val), ("test", test)):
            out[split][n], out[f"{split}_seen"][n] = renumber(labels[n], classes[n])
        if not bool(out["test_seen"][n].any()):
            raise ValueError(f"no test row of label set {n!r} has a class that occurs in the train split")
    rows = {n: seen.nonzero().flatten() for n, seen in out["test_seen"].items()}
    unseen = {n: int(seen.numel() - r.numel()) for (n, seen), r in zip(out["test_seen"].items(), rows.values())}
    return Labels(**out, classes=classes, carve=carve, test_seen_rows=rows, unseen_test_rows=unseen)
