"""Batch norms folded into the convolutions before them, for a capture's forward passes.

In eval mode a batch norm is an affine map per channel, so the convolution that feeds it (when
nothing else reads that convolution's output) can absorb it:
``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``. A capture then
runs a copy of the model without those batch norms: the same features up to float rounding, and
one pass over each activation map fewer (docs/DESIGN.md, "Measuring every step").

The pairs are found once by tracing the model with ``torch.fx``. A model that does not trace, has
no such pair, carries hooks or parametrizations (the copy would run them twice or not at all),
or cannot be copied, is run as it is (:func:`folded` returns None).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _plain(model: nn.Module) -> bool:
    """No hooks, no parametrizations, parameters on one device: a copy computes what the model
    computes."""
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or parametrize.is_parametrized(m):
            return False
    return len({p.device for p in model.parameters()}) <= 1


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (type(conv) in _CONVS and type(norm) in _NORMS and norm.track_running_stats
            and norm.running_mean is not None and conv.out_channels == norm.num_features)


def conv_norm_pairs(model: nn.Module, keep: set[str]) -> list[tuple[str, str]]:
    """(convolution, batch norm) module names, each called once per forward, where the batch
    norm reads the convolution's output and nothing else does; modules named in ``keep`` (the
    captured layers) stay as they are. Empty where the model does not trace."""
    if not any(isinstance(m, _NORMS) for m in model.modules()):
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any model fx cannot trace is run unfolded
        return []
    modules = dict(model.named_modules())
    calls = [n.target for n in graph.nodes if n.op == "call_module"]
    pairs = []
    for node in graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv, norm = src.target, node.target
        if (_foldable(modules[conv], modules[norm]) and calls.count(conv) == calls.count(norm) == 1
                and not {conv, norm} & keep):
            pairs.append((conv, norm))
    return pairs


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class FoldedModel:
    """A copy of ``model`` whose batch norms of ``pairs`` are folded into their convolutions;
    :meth:`synced` brings its values up to the model's current ones (eval-mode semantics)."""

    def __init__(self, model: nn.Module, pairs: list[tuple[str, str]]):
        self.model, self.pairs = model, pairs
        self.copy = copy.deepcopy(model).requires_grad_(False)
        for conv, norm in pairs:
            c = self.copy.get_submodule(conv)
            if c.bias is None:
                c.bias = nn.Parameter(c.weight.new_zeros(c.out_channels), requires_grad=False)
            _set(self.copy, norm, nn.Identity())
        refolded = {f"{conv}.{p}" for conv, _ in pairs for p in ("weight", "bias")}
        live = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        mine = {**dict(self.copy.named_parameters()), **dict(self.copy.named_buffers())}
        names = [n for n in mine if n not in refolded and n in live]
        self._dst, self._src = [mine[n] for n in names], [live[n] for n in names]
        self._folds = [(model.get_submodule(conv), model.get_submodule(norm), self.copy.get_submodule(conv))
                       for conv, norm in pairs]
        self._layout = self._signature()

    def _signature(self) -> list:
        return [(id(t), t.shape, t.dtype, t.device) for t in (*self.model.parameters(), *self.model.buffers())]

    def stale(self) -> bool:
        """Whether the model's parameters or buffers were replaced or changed shape, dtype or
        device since the copy (its references to them would be out of date)."""
        return self._signature() != self._layout

    @torch.no_grad()
    def synced(self) -> nn.Module:
        """The copy, with the model's current values and its batch norms folded."""
        if self._dst:
            torch._foreach_copy_(self._dst, self._src)
        for c, n, into in self._folds:
            scale = torch.rsqrt(n.running_var + n.eps)
            if n.weight is not None:
                scale = scale * n.weight
            shift = -n.running_mean * scale + (n.bias if n.bias is not None else 0.0)
            into.weight.copy_(c.weight * scale.view(-1, *([1] * (c.weight.dim() - 1))))
            into.bias.copy_(shift if c.bias is None else c.bias * scale + shift)
        return self.copy


def folded(model: nn.Module, keep: set[str]) -> FoldedModel | None:
    """``model`` with its foldable batch norms folded (:class:`FoldedModel`), or None where
    nothing folds or the model is not one a copy can stand in for."""
    if not _plain(model):
        return None
    pairs = conv_norm_pairs(model, keep)
    if not pairs:
        return None
    try:
        return FoldedModel(model, pairs)
    except Exception:  # noqa: BLE001 - a model that cannot be deep-copied is run unfolded
        return None
