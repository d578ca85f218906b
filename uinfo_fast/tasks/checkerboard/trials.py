"""Trials of the checkerboard task of Kleinman et al. (ICLR 2021), and a train/validation split.

A trial, as in the monkey decision-making experiments: a red/green checkerboard is shown with
two targets, one red and one green; the subject reaches to the target whose colour dominates the
board. Which side holds the red target is drawn at random each trial, so the reach direction (the
output) is decoupled from the colour: colour matters only together with the target configuration.

Label conventions (all int64, balanced):

* ``colour``    dominant colour of the board:        0 = red,      1 = green
* ``targets``   target configuration:                0 = red-left,  1 = red-right (green-left)
* ``direction`` reach direction (the task output):   0 = left,      1 = right

The reach goes to the dominant colour's target, so ``direction = colour XOR targets``:
red board & red-left -> left (0), red & red-right -> right (1), green & red-left -> right (1),
green & red-right -> left (0).

Signs: +1 means green everywhere. ``coherence`` is the signed colour coherence in [-1, 1],
positive for a green board; the board's green fraction is ``0.5 + coherence / 2``.

Two input codings (``coding``):

* ``"board"``, ``board_size + 2`` values: ``board_size`` squares, each +1 (green) or -1 (red),
  drawn independently with the trial's green fraction (so the colour evidence itself is noisy,
  strongly so at low coherence), plus Gaussian input noise of standard deviation ``noise``; then
  the left target's colour and the right target's colour, +1 green / -1 red, noise-free (the
  targets are clearly visible in the experiments; only the board carries the hard evidence).
* ``"four"``, 4 values, the coding of the first author's checkerboard RNN code of that period
  (mjkleinman/multi-area-cleaned; not confirmed as the ICLR setup): the left and the right
  target's colours (±1, noise-free), then the red and the green coherence (``-coherence`` and
  ``+coherence``), each with its own Gaussian noise of standard deviation ``coherence_noise``.

Training on fresh trials (``render_inputs`` with a new generator each time a trial is seen)
redraws the noise of each trial, so a network cannot memorise it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from ...engine.params import Choice, Integer, ListOf, Real, check_param

__all__ = ["CODINGS", "DEFAULT_COHERENCES", "LEARNABLE_COHERENCES", "CheckerboardTrials", "input_dim",
           "make_checkerboard_trials", "render_inputs", "split_trials"]

CODINGS = ("board", "four")

# Unsigned coherence levels |#green - #red| / #squares. They span the range of the monkey
# checkerboard experiments (a few percent, where choices are near chance, up to 0.9, where they
# are near perfect); the exact values are our choice, not quoted from the paper.
DEFAULT_COHERENCES = (0.04, 0.10, 0.20, 0.40, 0.60, 0.90)
# The training experiments' levels (`uinfo-fast run --task checkerboard`). The paper's network
# ends with about 1 bit of direction information, so its task is close to noise-free. At the
# monkey-style levels above even an ideal observer errs on many trials and a network memorises
# the board noise; from 0.3 up the ideal observer is almost never wrong. The figures are in
# docs/RESULTS.md, from bench/checkerboard_ideal_observer.py and the sweeps.
LEARNABLE_COHERENCES = (0.30, 0.45, 0.60, 0.75, 0.90)


@dataclass
class CheckerboardTrials:
    """A batch of checkerboard trials; row ``i`` of every field belongs to trial ``i``.

    ``inputs`` float32 [N, board_size + 2]; ``direction``, ``colour``, ``targets`` int64 [N];
    ``coherence`` float32 [N], signed, positive = green (see the module docstring).
    """

    inputs: torch.Tensor
    direction: torch.Tensor
    colour: torch.Tensor
    targets: torch.Tensor
    coherence: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def input_dim(self) -> int:
        return self.inputs.shape[1]

    def labels(self) -> dict[str, torch.Tensor]:
        """The label sets of interest, name -> int64 [N]."""
        return {"direction": self.direction, "colour": self.colour, "targets": self.targets}

    def subset(self, idx) -> "CheckerboardTrials":
        """The trials selected by ``idx`` (an index tensor, boolean mask, list or slice)."""
        return CheckerboardTrials(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def input_dim(coding: str = "board", board_size: int = 100) -> int:
    """Length of a trial's input vector in ``coding``."""
    return board_size + 2 if coding == "board" else 4


def render_inputs(coherence: torch.Tensor, targets: torch.Tensor, gen: torch.Generator, *, coding: str = "board",
                  noise: float = 0.5, board_size: int = 100, coherence_noise: float = 0.1) -> torch.Tensor:
    """Input vectors [N, input_dim] of trials with signed ``coherence`` and ``targets`` (see the
    module docstring), their noise drawn from ``gen``."""
    n = coherence.shape[0]
    left = 2.0 * targets.float() - 1.0  # the left target is red (-1) for red-left (targets == 0)
    if coding == "four":
        coh = torch.stack([-coherence, coherence], dim=1).float()
        coh = coh + coherence_noise * torch.randn(n, 2, generator=gen) if coherence_noise > 0 else coh
        return torch.cat([left.unsqueeze(1), -left.unsqueeze(1), coh], dim=1).contiguous()
    p_green = (0.5 + coherence.float() / 2).unsqueeze(1).expand(n, board_size)
    board = 2.0 * torch.bernoulli(p_green, generator=gen) - 1.0
    if noise > 0:
        board = board + noise * torch.randn(n, board_size, generator=gen)
    return torch.cat([board, left.unsqueeze(1), -left.unsqueeze(1)], dim=1).to(torch.float32).contiguous()


def make_checkerboard_trials(n: int, *, seed: int = 0, coherences: Sequence[float] = DEFAULT_COHERENCES,
                             noise: float = 0.5, board_size: int = 100, coding: str = "board",
                             coherence_noise: float = 0.1) -> CheckerboardTrials:
    """``n`` checkerboard trials, deterministic for ``seed`` (own generator; the global RNG is untouched).

    ``coherences``: unsigned coherence levels in (0, 1]; ``noise``: standard deviation of the
    Gaussian noise added to each board square; ``board_size``: number of squares (default 100, a
    10x10 board); ``coding``: "board" or "four" (the module docstring); ``coherence_noise``: the
    standard deviation of the noise on each coherence input of the "four" coding.

    Colour, target configuration and coherence level are stratified: the ``4 * len(coherences)``
    combinations are repeated as evenly as ``n`` allows and shuffled, so the labels are balanced
    and colour, targets and level are independent by construction (exactly so when ``n`` is a
    multiple of ``4 * len(coherences)``).
    """
    check_param("n", n, Integer(1))
    check_param("seed", seed, Integer())
    check_param("board_size", board_size, Integer(1))
    check_param("noise", noise, Real(0.0))
    check_param("coherence_noise", coherence_noise, Real(0.0))
    check_param("coding", coding, Choice(CODINGS))
    # Coherence 0 has no dominant colour, so the colour label would be meaningless.
    levels = list(check_param("coherences", tuple(coherences) if isinstance(coherences, (list, tuple)) else coherences,
                              ListOf(Real(0.0, 1.0, low_open=True))))
    gen = torch.Generator().manual_seed(seed)
    n_levels = len(levels)
    cell = torch.arange(n)[torch.randperm(n, generator=gen)] % (4 * n_levels)
    colour = cell % 2
    targets = (cell // 2) % 2
    level = cell // 4
    direction = colour ^ targets

    sign = 2.0 * colour.float() - 1.0  # +1 green, -1 red
    coherence = sign * torch.tensor(levels, dtype=torch.float32)[level]
    inputs = render_inputs(coherence, targets, gen, coding=coding, noise=noise, board_size=board_size,
                           coherence_noise=coherence_noise)
    return CheckerboardTrials(inputs=inputs, direction=direction, colour=colour, targets=targets,
                              coherence=coherence)


def split_trials(trials: CheckerboardTrials, val_fraction: float = 0.1,
                 seed: int = 0) -> tuple[CheckerboardTrials, CheckerboardTrials]:
    """A random (train, validation) split; the paper uses 90% / 10%. Deterministic for ``seed``."""
    check_param("val_fraction", val_fraction, Real(0.0, 1.0, low_open=True, high_open=True))
    check_param("seed", seed, Integer())
    n = len(trials)
    n_val = round(n * val_fraction)
    if n_val < 1 or n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} of {n} trials leaves an empty train or validation set")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return trials.subset(perm[n_val:]), trials.subset(perm[:n_val])
