"""The small fully connected network of the checkerboard task, and its accuracy."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...engine.params import Choice, Integer, ListOf, check_param
from .trials import CheckerboardTrials

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class CheckerboardNet(nn.Module):
    """A small fully connected network for the checkerboard task.

    "FC Small, n = 2" in the paper is read here as a fully connected net with two hidden layers
    (``hidden=(100, 100)``): small next to the paper's CNNs, yet ample for this low-dimensional
    task. Hidden layer ``k`` is the submodule ``hidden{k}`` = Sequential(Linear, activation), so a
    forward hook on ``"hidden1"`` sees post-activation features; the output layer is ``out``
    (logits over ``num_outputs`` reach directions).
    """

    def __init__(self, input_dim: int, hidden: Sequence[int] = (100, 100), num_outputs: int = 2,
                 activation: str = "relu"):
        super().__init__()
        check_param("input_dim", input_dim, Integer(1))
        # At least one hidden layer: direction = colour XOR targets is not linearly separable.
        hidden = tuple(check_param("hidden", hidden, ListOf(Integer(1))))
        check_param("num_outputs", num_outputs, Integer(2))
        check_param("activation", activation, Choice(tuple(_ACTIVATIONS)))
        self.hidden_sizes = hidden
        width = input_dim
        for k, h in enumerate(hidden, start=1):
            self.add_module(f"hidden{k}", nn.Sequential(nn.Linear(width, h), _ACTIVATIONS[activation]()))
            width = h
        self.out = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, len(self.hidden_sizes) + 1):
            x = getattr(self, f"hidden{k}")(x)
        return self.out(x)


@torch.no_grad()
def accuracy(model: nn.Module, trials: CheckerboardTrials) -> float:
    """Fraction of trials whose arg-max output equals ``direction``; the model's train/eval mode is kept."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = trials.inputs if param is None else trials.inputs.to(param.device, param.dtype)
        pred = model(x).argmax(dim=1).cpu()
    finally:
        model.train(was_training)
    return float((pred == trials.direction.cpu()).float().mean())
