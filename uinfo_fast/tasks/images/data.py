"""Image data for the network experiments: CIFAR-100 with both label sets, a built-in synthetic
stand-in, batch augmentation and a small batch iterator.

Both sources give an :class:`ImageSplit`: uint8 images [N, 3, 32, 32] with 20 ``coarse`` and 100
``fine`` labels.

The synthetic set (:func:`synthetic_cifar`) needs no download. It is built so that a network
trained on the *coarse* labels sees fine-class information that it does not need:

* Each coarse class has a low-frequency prototype: a near-grey background and 3-4 large soft
  Gaussian blobs with class-specific colours and positions. The 20 prototypes are picked by
  farthest-point sampling from a pool of random candidates, so they are clearly distinct.
* Each fine class adds a detail: an 8x8 grating with its own orientation, spatial frequency and
  colour, pasted at a random position with moderate contrast. The 5 fine classes of one coarse
  class share the prototype and differ only in this detail; their 5 details fan out in
  orientation and hue so that they are easy to tell apart.
* Per-image nuisance (translation of the prototype and jitter of each blob, brightness, contrast
  and colour-cast jitter, Gaussian pixel noise) makes the coarse task a learning problem rather
  than a lookup of the mean colour.

Why: the prototype alone determines the coarse class, so the details are visible but irrelevant
to the coarse task. What tells the 5 fine classes of a coarse class apart is of no use for it.
Early conv layers pick the details up (oriented high-frequency textures are what they detect);
a network trained on coarse labels can then keep or discard that fine-class information, which is
what the usable-information measurements follow. Each fine class has its own detail, so a
detail also reveals its coarse class: a redundant cue that a network may use early in training
and later drop. ``shared_details=True`` removes that cue: fine class ``5 * c + j`` gets detail
``j`` for every ``c``, which makes the detail independent of the coarse label.

The class structure (prototypes and details) is fixed and the same for every seed; the seed draws
the images: labels, positions, jitter and noise. Everything is drawn from a ``torch.Generator``,
never from the global random state.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from ...engine.params import Integer, check_param

N_COARSE = 20
FINE_PER_COARSE = 5
N_FINE = N_COARSE * FINE_PER_COARSE
IMAGE_SHAPE = (3, 32, 32)

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass
class ImageSplit:
    """One split of an image set: uint8 ``images`` [N, 3, 32, 32], int64 ``coarse`` [N] in
    [0, 20) and int64 ``fine`` [N] in [0, 100)."""

    images: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {self.images.dtype}")
        if self.images.dim() != 4 or tuple(self.images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"images must have shape [N, 3, 32, 32], got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        for name, num_classes in (("coarse", N_COARSE), ("fine", N_FINE)):
            y = getattr(self, name)
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
            if y.dtype != torch.int64:
                raise TypeError(f"{name} must be int64, got {y.dtype}")
            if y.dim() != 1 or y.shape[0] != n:
                raise ValueError(f"{name} must have shape [{n}] to match images, got {tuple(y.shape)}")
            if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise ValueError(f"{name} must lie in [0, {num_classes}), "
                                 f"found values in [{int(y.min())}, {int(y.max())}]")

    def __len__(self) -> int:
        return self.images.shape[0]

    def labels(self) -> dict[str, torch.Tensor]:
        return {"coarse": self.coarse, "fine": self.fine}

    def subset(self, idx) -> ImageSplit:
        """The examples at ``idx`` (an index tensor, a list or a slice)."""
        if isinstance(idx, list):
            idx = torch.as_tensor(idx, dtype=torch.int64)
        return ImageSplit(self.images[idx], self.coarse[idx], self.fine[idx])


# ---------------------------------------------------------------------------------------------
# Synthetic CIFAR-100-shaped images

_SIZE = 32
_N_BLOBS = 4
_PATCH = 8
_TEMPLATE_SEED = 20_100  # the class structure is part of the task, not of the sample
_CHUNK = 4096  # images rendered at once: bounds the float32 working memory to a few hundred MB

_DETAIL_ALPHA = 0.7
_DETAIL_FREQ = (0.22, 0.46)  # cycles per pixel: above what the 8x8-pooled image keeps
# Backgrounds close to grey and a per-image colour cast, so that the mean colour alone does not
# give the coarse class away; the blobs have to be seen.
_BG_GREY = (0.25, 0.75)
_BG_TINT = 0.1
_COLOUR_CAST = 0.15
_MAX_SHIFT = 4.0  # translation of the whole prototype, pixels
_BLOB_JITTER = 2.0  # extra independent displacement of each blob, pixels
_CONTRAST = (0.75, 1.25)
_BRIGHTNESS = 0.1
_NOISE_STD = 0.06


def _uniform(shape, lo, hi, gen):
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _hue_to_rgb(hue: torch.Tensor, saturation: float = 0.85) -> torch.Tensor:
    """Fully bright colours of the given hues in [0, 1): [...] -> [..., 3] (HSV to RGB)."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * hue[..., None]) % 6
    return 1 - saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def _render_prototypes(bg, centres, sigma, colours, opacity):
    """Alpha-composites the blobs over the background: bg [B, 3], centres [B, K, 2] (x, y),
    sigma [B, K], colours [B, K, 3], opacity [B, K] -> float images [B, 3, 32, 32]."""
    grid = torch.arange(_SIZE, dtype=torch.float32)
    # Separable Gaussians: two [B, K, 32] profiles instead of exp over [B, K, 32, 32].
    two_s2 = 2 * sigma[..., None] ** 2
    gx = torch.exp(-(grid - centres[..., 0:1]) ** 2 / two_s2)
    gy = torch.exp(-(grid - centres[..., 1:2]) ** 2 / two_s2)
    alpha = opacity[..., None, None] * gy[..., :, None] * gx[..., None, :]  # [B, K, 32, 32]
    img = bg[:, :, None, None].expand(-1, -1, _SIZE, _SIZE)
    for k in range(centres.shape[1]):
        img = torch.lerp(img, colours[:, k, :, None, None], alpha[:, k:k + 1])
    return img


@functools.lru_cache(maxsize=1)
def _templates():
    """The fixed class structure: 20 prototypes, picked by farthest-point sampling from 256
    random candidates so that no two coarse classes look alike, and 100 details, indexed by fine
    label. The 5 details of a coarse class fan out in orientation (36 degrees apart, the fan
    rotated per coarse class) and in hue (a fifth of the colour circle apart), so that they are
    easy to tell apart from each other, while each has its own spatial frequency."""
    gen = torch.Generator().manual_seed(_TEMPLATE_SEED)
    m = 256
    bg = _uniform((m, 1), _BG_GREY[0], _BG_GREY[1], gen) + _uniform((m, 3), -_BG_TINT, _BG_TINT, gen)
    centres = _uniform((m, _N_BLOBS, 2), 6.0, 26.0, gen)
    sigma = _uniform((m, _N_BLOBS), 3.5, 6.5, gen)
    colours = torch.rand((m, _N_BLOBS, 3), generator=gen)
    n_blobs = torch.randint(3, _N_BLOBS + 1, (m,), generator=gen)
    opacity = _uniform((m, _N_BLOBS), 0.8, 1.0, gen) * (torch.arange(_N_BLOBS) < n_blobs[:, None])
    # Distances on 8x8 thumbnails: the prototypes are meant to differ at low frequency.
    thumbs = F.avg_pool2d(_render_prototypes(bg, centres, sigma, colours, opacity), 4).flatten(1)
    chosen = [0]
    min_dist = torch.cdist(thumbs, thumbs[:1]).squeeze(1)
    for _ in range(N_COARSE - 1):
        nxt = int(min_dist.argmax())
        chosen.append(nxt)
        min_dist = torch.minimum(min_dist, torch.cdist(thumbs, thumbs[nxt:nxt + 1]).squeeze(1))
    sel = torch.tensor(chosen)
    j = torch.arange(FINE_PER_COARSE)
    theta = math.pi * (j + torch.rand((N_COARSE, 1), generator=gen)) / FINE_PER_COARSE  # [20, 5]
    hue = (torch.rand((N_COARSE, 1), generator=gen) + j / FINE_PER_COARSE) % 1
    freq = _uniform((N_COARSE, FINE_PER_COARSE), *_DETAIL_FREQ, gen)
    return {
        "bg": bg[sel], "centres": centres[sel], "sigma": sigma[sel], "colours": colours[sel],
        "opacity": opacity[sel],
        "cos": torch.cos(theta).flatten(), "sin": torch.sin(theta).flatten(), "freq": freq.flatten(),
        "detail_rgb": _hue_to_rgb(hue).reshape(N_FINE, 3),
    }


def _render(fine: torch.Tensor, shared_details: bool, gen: torch.Generator) -> torch.Tensor:
    """uint8 images [B, 3, 32, 32] for fine labels [B]."""
    t = _templates()
    b = fine.shape[0]
    c = fine // FINE_PER_COARSE
    d = fine % FINE_PER_COARSE if shared_details else fine  # which detail

    shift = _uniform((b, 1, 2), -_MAX_SHIFT, _MAX_SHIFT, gen)
    jitter = _uniform((b, _N_BLOBS, 2), -_BLOB_JITTER, _BLOB_JITTER, gen)
    img = _render_prototypes(t["bg"][c], t["centres"][c] + shift + jitter, t["sigma"][c],
                             t["colours"][c], t["opacity"][c])

    # Detail: a grating from black to the detail colour in an 8x8 window at a random position,
    # with a random phase so that it is a texture to detect rather than a fixed pixel pattern.
    # Only the window is computed, then blended back in place.
    local = torch.arange(_PATCH)
    rows = torch.randint(0, _SIZE - _PATCH + 1, (b, 1), generator=gen) + local  # [B, 8]
    cols = torch.randint(0, _SIZE - _PATCH + 1, (b, 1), generator=gen) + local
    phase = _uniform((b, 1, 1), 0.0, 2 * math.pi, gen)
    u, v = local.float()[None, None, :], local.float()[None, :, None]
    proj = u * t["cos"][d, None, None] + v * t["sin"][d, None, None]  # [B, 8, 8]
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * t["freq"][d, None, None] * proj + phase)
    detail = wave[..., None] * t["detail_rgb"][d][:, None, None, :]  # [B, 8, 8, 3]
    # Advanced indices around the channel slice put the indexed dims first: [B, 8, 8, 3].
    window = (torch.arange(b)[:, None, None], slice(None), rows[:, :, None], cols[:, None, :])
    img = img.contiguous()
    img[window] = torch.lerp(img[window], detail, _DETAIL_ALPHA)

    # Contrast about the image mean, a colour cast, a brightness shift and noise, fused:
    # ((img - m) * contrast + m) * cast + brightness + noise.
    contrast = _uniform((b, 1, 1, 1), *_CONTRAST, gen)
    cast = _uniform((b, 3, 1, 1), 1 - _COLOUR_CAST, 1 + _COLOUR_CAST, gen)
    brightness = _uniform((b, 1, 1, 1), -_BRIGHTNESS, _BRIGHTNESS, gen)
    offset = img.mean(dim=(1, 2, 3), keepdim=True) * (1 - contrast) * cast + brightness
    out = torch.randn(img.shape, generator=gen).mul_(_NOISE_STD)
    out.addcmul_(img, contrast * cast).add_(offset)
    # + 0.5 then truncation rounds to the nearest level.
    return out.clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8)


def _synthetic_split(n: int, shared_details: bool, gen: torch.Generator) -> ImageSplit:
    # Balanced: each fine class n // 100 times, the first n % 100 classes once more, shuffled.
    fine = (torch.arange(n) % N_FINE)[torch.randperm(n, generator=gen)]
    images = torch.empty((n, *IMAGE_SHAPE), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        images[start:start + _CHUNK] = _render(fine[start:start + _CHUNK], shared_details, gen)
    return ImageSplit(images, fine // FINE_PER_COARSE, fine)


def synthetic_cifar(n_train: int = 10_000, n_test: int = 2_000, seed: int = 0, *,
                    shared_details: bool = False) -> tuple[ImageSplit, ImageSplit]:
    """A procedurally generated CIFAR-100-shaped image set: (train, test) splits of uint8 images
    [N, 3, 32, 32], 20 coarse x 5 fine classes with ``fine = 5 * coarse + j``, each fine class
    equally often (up to rounding) in each split. Deterministic for a seed.

    ``shared_details=True`` gives fine class ``5 * c + j`` the detail of class ``j`` for every
    coarse class ``c``, which makes the detail independent of the coarse label (see the module
    docstring)."""
    check_param("n_train", n_train, Integer(0))
    check_param("n_test", n_test, Integer(0))
    gen = torch.Generator().manual_seed(int(seed))
    return _synthetic_split(n_train, shared_details, gen), _synthetic_split(n_test, shared_details, gen)


# ---------------------------------------------------------------------------------------------
# CIFAR-100

_CIFAR_FOLDER = "cifar-100-python"


@functools.lru_cache(maxsize=1)
def _cifar100_class():
    # torchvision is imported only here so that the synthetic data works without it.
    from torchvision.datasets import CIFAR100

    class _CIFAR100(CIFAR100):
        """torchvision's CIFAR100 whose MD5 checks can be switched off (tiny test archives)."""

        def __init__(self, root, train: bool, download: bool, verify: bool):
            self._verify = verify
            super().__init__(root, train=train, download=download)

        def _check_integrity(self) -> bool:
            if self._verify:
                return super()._check_integrity()
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, name))
                       for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            if self._verify:
                return super()._load_meta()
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return _CIFAR100


def _cifar_split(root: Path, train: bool, download: bool, verify: bool) -> ImageSplit:
    try:
        ds = _cifar100_class()(str(root), train=train, download=download, verify=verify)
    except RuntimeError as e:
        raise RuntimeError(f"CIFAR-100 in {root} is incomplete or failed its MD5 check ({e}); "
                           f"delete {root / _CIFAR_FOLDER} and pass download=True to fetch it again") from e
    # torchvision keeps only the fine labels; the coarse ones are in the same pickle.
    with open(root / _CIFAR_FOLDER / ("train" if train else "test"), "rb") as f:
        coarse = pickle.load(f, encoding="latin1")["coarse_labels"]
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
    return ImageSplit(images, torch.tensor(coarse, dtype=torch.int64),
                      torch.tensor(ds.targets, dtype=torch.int64))


def load_cifar100(data_dir, download: bool = False, verify: bool = True) -> tuple[ImageSplit, ImageSplit]:
    """CIFAR-100 (train, test) with coarse and fine labels, read through
    ``torchvision.datasets.CIFAR100`` from ``data_dir/cifar-100-python``.

    ``download=True`` fetches the archive (about 170 MB) when it is not there. ``verify=False``
    skips torchvision's MD5 checks and only requires the files to exist.
    """
    root = Path(data_dir).expanduser()
    folder = root / _CIFAR_FOLDER
    if not download:
        missing = [name for name in ("train", "test", "meta") if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"CIFAR-100 not found in {root} (missing {', '.join(str(folder / m) for m in missing)}); "
                f"pass download=True (or --download on the command line) to fetch it")
    return (_cifar_split(root, True, download, verify), _cifar_split(root, False, download, verify))


# ---------------------------------------------------------------------------------------------
# Batches

def _check_batch(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape [B, 3, H, W], got {tuple(images.shape)}")


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation for a whole uint8 batch [B, 3, H, W]: a random crop of the
    zero-padded image and a random horizontal flip, drawn per image from ``generator``. Runs on
    the images' device without a loop over images."""
    _check_batch(images)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_param("padding", padding, Integer(0))
    b, _, h, w = images.shape
    dev = images.device
    # Draw on the generator's device so that a CPU generator drives a GPU batch the same way.
    oy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device).to(dev)
    flip = torch.rand((b, 1), generator=generator, device=generator.device).to(dev) < 0.5
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = oy + torch.arange(h, device=dev)  # [B, H]
    cols = ox + torch.where(flip, torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev))
    # Advanced indices around a slice put the indexed dims first: [B, H, W, 3].
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 standardised with the CIFAR-100 channel mean and std (also used
    for the synthetic set, whose statistics are close enough)."""
    _check_batch(images)
    mean = torch.tensor(CIFAR100_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


class BatchIterator:
    """Mini-batches of an :class:`ImageSplit` for one epoch per ``iter()``: yields (normalised float
    images, coarse, fine) on ``device``. Shuffling and augmentation are drawn from ``generator``
    (a fresh one seeded with 0 if None), so the sequence of epochs is deterministic."""

    def __init__(self, split: ImageSplit, batch_size: int, *, shuffle: bool = True, augment: bool = False,
                 drop_last: bool = False, generator: torch.Generator | None = None, device="cpu"):
        if not isinstance(split, ImageSplit):
            raise TypeError(f"split must be an ImageSplit, got {type(split).__name__}")
        check_param("batch_size", batch_size, Integer(1))
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            # Move uint8 (4x smaller than float) and augment/normalise on the target device.
            images = self.split.images[idx].to(self.device, non_blocking=True)
            if self.augment:
                images = augment_batch(images, self.generator)
            yield (normalize(images), self.split.coarse[idx].to(self.device),
                   self.split.fine[idx].to(self.device))
