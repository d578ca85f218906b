"""Probe inputs as models take them: a tensor [N, ...], or a dict of tensors that share their first
dimension (``input_ids``, ``attention_mask``, ... of a tokenised batch), passed to the model as
keyword arguments. One place for the row operations capture and the tracker need on either."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def checked(x, name: str, minimum: int = 1) -> Inputs:
    """``x`` itself, once it is a tensor [N, ...] or a dict of tensors [N, ...] with N >=
    ``minimum``; a ValueError naming ``name`` and what was expected otherwise."""
    if isinstance(x, Mapping):
        bad = [k for k, v in x.items() if not isinstance(v, torch.Tensor) or v.dim() < 1]
        if not x or bad:
            raise ValueError(f"{name} must be a dict of tensors [N, ...]; {bad or 'it is empty'} are not")
        rows = {k: v.shape[0] for k, v in x.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"{name}: every tensor of the dict must have the same first dimension N, got {rows}")
    elif not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"{name} must be a tensor [N, ...] or a dict of them, got {type(x).__name__}")
    if rows_of(x) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} rows, got {rows_of(x)}")
    return x


def rows_of(x: Inputs) -> int:
    return next(iter(x.values())).shape[0] if isinstance(x, Mapping) else x.shape[0]


def device_of(x: Inputs) -> torch.device:
    return next(iter(x.values())).device if isinstance(x, Mapping) else x.device


def each(x: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    """``fn`` applied to the tensor, or to every tensor of the dict."""
    return {k: fn(v) for k, v in x.items()} if isinstance(x, Mapping) else fn(x)


def _channels_last(v: torch.Tensor) -> bool:
    return v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last)


def _laid_out_as(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in channels-last layout where ``like`` (its source) is: the convolutions run so."""
    return out.contiguous(memory_format=torch.channels_last) if _channels_last(like) else out


def take(x: Inputs, rows: torch.Tensor) -> Inputs:
    """The rows ``rows`` (indices) of ``x``; 4-D tensors keep a channels-last layout."""
    return each(x, lambda v: _laid_out_as(v.index_select(0, rows.to(v.device)), v))


def split(x: Inputs, size: int) -> list[Inputs]:
    """Consecutive batches of at most ``size`` rows."""
    n = rows_of(x)
    return [each(x, lambda v, lo=lo: v[lo:lo + size]) for lo in range(0, n, size)]


def joinable(xs: list[Inputs]) -> bool:
    """Whether ``xs`` can run forward as one stream of batches (:func:`spanning`): tensors of one
    shape past the rows, one dtype, one device and one memory layout (dicts are not joined:
    their token sequences may differ in length)."""
    if not xs or not all(isinstance(x, torch.Tensor) for x in xs):
        return False
    first = xs[0]
    return all(x.shape[1:] == first.shape[1:] and x.dtype == first.dtype and x.device == first.device
               and _channels_last(x) == _channels_last(first) for x in xs)


def spanning(xs: list[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Batches of ``size`` rows over the :func:`joinable` ``xs`` one after another, as if they were
    concatenated (a batch is copied only where it straddles two of them): fewer and fuller
    forward passes than one stream per tensor, whose last batches run short."""
    n, bounds = sum(x.shape[0] for x in xs), [0]
    for x in xs:
        bounds.append(bounds[-1] + x.shape[0])
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        pieces = [x[max(lo - b, 0):hi - b] for x, b in zip(xs, bounds) if b < hi and b + x.shape[0] > lo]
        yield pieces[0] if len(pieces) == 1 else _laid_out_as(torch.cat(pieces), pieces[0])


def call(model: nn.Module, batch: Inputs, **kwargs):
    """The model's forward on one batch: a dict is passed as keyword arguments."""
    return model(**batch, **kwargs) if isinstance(batch, Mapping) else model(batch, **kwargs)


def concatenated(batches: Iterable[Inputs], name: str) -> Inputs:
    """One input set from batches: tensors joined along the rows; dict batches of token sequences
    (2-D tensors [N, T] of different T) padded on the right with zeros to the longest T first,
    which marks the padding as such in an attention mask."""
    batches = list(batches)
    if not batches:
        raise ValueError(f"{name}: no batch")
    if not isinstance(batches[0], Mapping):
        return torch.cat([checked(b, name) for b in batches])
    keys = set(batches[0])
    for b in batches:
        if not isinstance(b, Mapping) or set(b) != keys:
            raise ValueError(f"{name}: every batch must be a dict with the keys {sorted(keys)}")
    out = {}
    for k in batches[0]:
        parts = [b[k] for b in batches]
        if all(p.dim() == 2 for p in parts):
            width = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
        out[k] = torch.cat(parts)
    return checked(out, name)
