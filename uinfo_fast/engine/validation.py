"""Tensor validation at the public boundary, once per call: each error names the argument and
what was expected (type, dtype, shape, device, label range, finite values).

The public functions call these on their arguments before anything is fitted; internal code
after that point trusts its inputs and checks nothing again. Parameters (numbers, choices,
flags) are declared and checked in ``params.py``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .extension import require_device_support

FEATURE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# Rows per chunk of the finiteness check: its temporaries stay small next to the features.
_FINITE_CHUNK_ELEMENTS = 1 << 22


def check_l2(l2, name: str = "l2") -> list[float]:
    """One penalty or a sequence/tensor of them: a non-empty list of finite floats >= 0."""
    if isinstance(l2, (int, float)) and not isinstance(l2, bool):
        values = [l2]
    else:
        values = list(torch.as_tensor(l2, dtype=torch.float64).flatten().tolist())
    if not values:
        raise ValueError(f"{name} is empty: give at least one penalty")
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} values must be finite and >= 0, got {v}")
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------------------
# Tensors


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element is finite, checked in row chunks so that the boolean temporaries
    stay small next to a large feature matrix."""
    rows = max(1, _FINITE_CHUNK_ELEMENTS // max(1, x[0].numel())) if x.shape[0] else 1
    return all(bool(torch.isfinite(chunk).all()) for chunk in x.split(rows))


def check_features(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, D], got {type(x).__name__}")
    if x.dtype not in FEATURE_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16, float16 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    require_device_support(x.device)
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x.detach()  # features are data: a probe never differentiates through them


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


def feature_sets(features, name: str) -> dict[str, torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return {"features": features}
    if isinstance(features, Mapping):
        if not features:
            raise ValueError(f"{name} is empty: give at least one feature set")
        return dict(features)
    raise TypeError(f"{name} must be a tensor [N, D] or a mapping name -> tensor, got {type(features).__name__}")


def same_names(a: Mapping, b: Mapping, what: str, name_a: str, name_b: str) -> None:
    if set(a) != set(b):
        raise ValueError(f"{name_a} and {name_b} name different {what}: {sorted(a)} vs {sorted(b)}")
