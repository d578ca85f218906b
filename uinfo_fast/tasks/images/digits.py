"""An embedded image set whose fine classes are shapes: handwritten digits, grouped into coarse
classes of unlike digits.

Why (docs/DESIGN.md, section 5): to show fine information rising under coarse training,
a coarse class must be a union of fine classes that look unlike each other, and the fine classes
must be hard for a random network's features (shape, not mean colour or texture). Here:

* a **fine class** is a digit 0-9. Each image draws one of the 1,797 handwritten samples of its
  digit (8x8 grey levels 0..16), upscales it to 16x16 and sets it at a uniformly random place of a
  32x32 image, in a colour drawn per image independently of the class, over smooth random-colour
  clutter with pixel noise. Only the digit's shape tells the classes apart: a random ResNet-18
  of width 8 reads under a quarter of their 3.3 bits at every stage, where one trained on the
  digits for 6 epochs reads over 0.6 of them at its last stage (``tests/test_datasets.py`` pins
  both);
* a **coarse class** is a group of digits (``coarse_groups``, default 0-4 against 5-9, the
  CIFAR-10 poster's layout): each group holds five unlike shapes.

The samples are the test set of the UCI "Optical Recognition of Handwritten Digits" data
(E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), as scikit-learn ships it (``load_digits``), embedded
here as ``digits.csv.gz`` (64 pixel columns, then the digit) so that no run needs scikit-learn
or a download. Everything is drawn from a ``torch.Generator`` seeded by the caller.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...engine.params import Integer, check_param
from .data import DEFAULT_COARSE_GROUPS, ChannelStats, ImageSplit, check_coarse_groups, grouped_split

N_DIGITS = 10
GLYPH = 16  # side of a digit in the image, pixels
# Channel statistics of the set (measured on 4,000 images of seed 0; all three channels alike).
DIGITS_STATS = ChannelStats((0.431, 0.431, 0.431), (0.102, 0.102, 0.102))


@functools.cache
def _samples() -> tuple[torch.Tensor, torch.Tensor]:
    """The handwritten samples: float [1797, 1, 8, 8] in [0, 1], and their digits [1797]."""
    with gzip.open(Path(__file__).with_name("digits.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    return torch.from_numpy(table[:, :64] / 16.0).view(-1, 1, 8, 8), torch.from_numpy(table[:, 64]).long()


def _glyphs(fine: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random handwritten sample of each image's digit, upscaled: [N, 1, 16, 16]."""
    pixels, digits = _samples()
    idx = torch.empty_like(fine)
    for d in range(N_DIGITS):
        pool, mine = (digits == d).nonzero().squeeze(1), fine == d
        idx[mine] = pool[torch.randint(0, pool.numel(), (int(mine.sum()),), generator=gen)]
    return F.interpolate(pixels[idx], size=GLYPH, mode="bilinear", align_corners=False).clamp(0, 1)


def render_digits(fine: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 images [N, 3, 32, 32] of the digits ``fine``, drawn from ``gen``."""
    n = fine.shape[0]
    glyphs = _glyphs(fine, gen)
    clutter = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=32, mode="bilinear", align_corners=False)
    colour = torch.rand(n, 3, 1, 1, generator=gen)
    rows = torch.randint(0, 32 - GLYPH + 1, (n, 1), generator=gen) + torch.arange(GLYPH)
    cols = torch.randint(0, 32 - GLYPH + 1, (n, 1), generator=gen) + torch.arange(GLYPH)
    mask = torch.zeros(n, 32, 32)
    mask[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = glyphs[:, 0]
    mask = mask.unsqueeze(1)
    images = (0.25 + 0.35 * clutter) * (1 - mask) + colour * mask
    images = images + 0.03 * torch.randn(images.shape, generator=gen)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _split(n: int, groups, gen: torch.Generator) -> ImageSplit:
    fine = (torch.arange(n) % N_DIGITS)[torch.randperm(n, generator=gen)]  # balanced digits
    return grouped_split(render_digits(fine, gen), fine, groups, N_DIGITS)


def digit_images(n_train: int = 5_000, n_test: int = 1_000, seed: int = 0, *,
                 coarse_groups=None) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) splits of the digit set: ``fine`` the digit, ``coarse`` the index of its
    group in ``coarse_groups`` (a partition of the digits 0-9; None: 0-4 against 5-9).
    Deterministic for ``seed``."""
    check_param("n_train", n_train, Integer(1))
    check_param("n_test", n_test, Integer(1))
    check_param("seed", seed, Integer())
    groups = check_coarse_groups(DEFAULT_COARSE_GROUPS if coarse_groups is None else coarse_groups, N_DIGITS)
    gen = torch.Generator().manual_seed(seed)
    return _split(n_train, groups, gen), _split(n_test, groups, gen)
