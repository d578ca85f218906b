"""The toy probe data several test files share: 6-D inputs whose first two coordinates carry a
4-class label ("four"); the 2-class label ("parity") is its parity."""
import torch


def separable(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 6, generator=gen)
    x[:, 0] += 2.5 * (y % 2)
    x[:, 1] += 2.5 * (y // 2)
    return x, {"four": y, "parity": y % 2}


# The checkerboard's defaults before issue 17 changed them, which the run, sweep and resume tests
# were written against (their numbers of steps, learning rates and input sizes).
CHECKERBOARD_BEFORE_17 = dict(lr=0.05, batch_size=32, weight_decay=0.0, epochs=20.0, input_coding="board",
                              fresh_trials=False)
