"""Tensor validation at the public boundary, once per call: each error names the argument and
what was expected (type, dtype, shape, device, finite values). Labels and classes have their
own module, ``labels.py``.

The public functions call these on their arguments before anything is fitted; internal code
after that point trusts its inputs and checks nothing again. Parameters (numbers, choices,
flags) are declared and checked in ``params.py``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

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
