"""How hard the checkerboard task is: accuracy of the ideal observer (the sign of the board's sum;
with targets known, that gives the direction) and the direction information it leaves,
1 - H_b(error) bits, for the monkey-style and the learnable coherence levels.

    python bench/checkerboard_ideal_observer.py
"""
import math

from uinfo_fast.tasks.checkerboard import DEFAULT_COHERENCES, LEARNABLE_COHERENCES, make_checkerboard_trials


def binary_entropy(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


for name, levels in (("monkey-style", DEFAULT_COHERENCES), ("learnable", LEARNABLE_COHERENCES)):
    trials = make_checkerboard_trials(200_000, seed=0, coherences=levels)
    board = trials.inputs[:, :-2].sum(1)
    colour = (board > 0).long()
    direction = colour ^ trials.targets
    err = float((direction != trials.direction).float().mean())
    print(f"{name:>12} coherences {levels}: ideal observer accuracy {1 - err:.4f}, "
          f"direction information at most about {1 - binary_entropy(err):.3f} bits")
