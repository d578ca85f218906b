"""Image data for the network experiments: CIFAR-100 with both label sets, CIFAR-10 with coarse
groups of its classes, a built-in synthetic stand-in, batch augmentation and a small batch
iterator.

Every source gives an :class:`ImageSplit`: uint8 images [N, 3, 32, 32] with ``coarse`` and
``fine`` labels. CIFAR-100 and the synthetic set have 20 coarse and 100 fine classes. CIFAR-10
(:func:`load_cifar10`) has its 10 classes as ``fine`` labels and, as ``coarse`` label, the index
of the group that holds the class in a partition of the 10 classes (``coarse_groups``; by default
:data:`DEFAULT_COARSE_GROUPS`, classes 0-4 against 5-9), the task of Kleinman et al. (ICLR 2021):
a network trained on the groups and probed for the classes.

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

import collections
import functools
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F

from ...engine.params import Integer, check_param

N_COARSE = 20
FINE_PER_COARSE = 5
N_FINE = N_COARSE * FINE_PER_COARSE
IMAGE_SHAPE = (3, 32, 32)

CIFAR10_CLASSES = 10
# Kleinman et al. (ICLR 2021): the first five CIFAR-10 classes against the last five.
DEFAULT_COARSE_GROUPS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))


class ChannelStats(NamedTuple):
    """Per-channel (R, G, B) mean and standard deviation of pixel values in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR100_STATS = ChannelStats(CIFAR100_MEAN, CIFAR100_STD)
CIFAR10_STATS = ChannelStats((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass
class ImageSplit:
    """One split of an image set: uint8 ``images`` [N, 3, 32, 32], int64 ``coarse`` [N] in
    [0, n_coarse) and int64 ``fine`` [N] in [0, n_fine) (20 and 100 unless given: CIFAR-100 and
    the synthetic set)."""

    images: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor
    n_coarse: int = N_COARSE
    n_fine: int = N_FINE

    def __post_init__(self):
        check_param("n_coarse", self.n_coarse, Integer(1))
        check_param("n_fine", self.n_fine, Integer(1))
        if not isinstance(self.images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {self.images.dtype}")
        if self.images.dim() != 4 or tuple(self.images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"images must have shape [N, 3, 32, 32], got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        for name, num_classes in (("coarse", self.n_coarse), ("fine", self.n_fine)):
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
        return ImageSplit(self.images[idx], self.coarse[idx], self.fine[idx], self.n_coarse, self.n_fine)


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
# CIFAR-100 and CIFAR-10

class _Cifar(NamedTuple):
    title: str                # as messages name it
    torchvision_name: str     # the class in torchvision.datasets
    folder: str               # under data_dir, as the archive unpacks
    files: tuple[str, ...]    # what the folder must hold


CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR100 = _Cifar("CIFAR-100", "CIFAR100", CIFAR100_FOLDER, ("train", "test", "meta"))
_CIFAR10 = _Cifar("CIFAR-10", "CIFAR10", CIFAR10_FOLDER,
                  tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"))


@functools.cache
def _cifar_class(torchvision_name: str):
    """torchvision's CIFAR10 or CIFAR100 with a ``verify`` switch: ``verify=False`` skips the MD5
    checks and only requires the files to exist (tiny test archives are not the real files)."""
    # torchvision is imported only here so that the synthetic data works without it.
    import torchvision.datasets

    base = getattr(torchvision.datasets, torchvision_name)

    class _Switchable(base):
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

    _Switchable.__name__ = _Switchable.__qualname__ = f"_{torchvision_name}"
    return _Switchable


def _cifar_root(source: _Cifar, data_dir, download: bool) -> Path:
    """``data_dir`` as a path; unless downloading, a FileNotFoundError when files are missing."""
    root = Path(data_dir).expanduser()
    folder = root / source.folder
    missing = [] if download else [name for name in source.files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source.title} not found in {root} (missing from {folder}: {', '.join(missing)}); "
            f"pass download=True (or --download on the command line) to fetch it")
    return root


def _torchvision_split(source: _Cifar, root: Path, train: bool, download: bool, verify: bool):
    """The images (uint8 [N, 3, 32, 32]) and the labels torchvision reads (int64 [N]) of a split."""
    try:
        ds = _cifar_class(source.torchvision_name)(str(root), train=train, download=download, verify=verify)
    except RuntimeError as e:
        raise RuntimeError(f"{source.title} in {root} is incomplete or failed its MD5 check ({e}); "
                           f"delete {root / source.folder} and pass download=True to fetch it again") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def _cifar100_split(root: Path, train: bool, download: bool, verify: bool) -> ImageSplit:
    images, fine = _torchvision_split(_CIFAR100, root, train, download, verify)
    # torchvision keeps only the fine labels; the coarse ones are in the same pickle.
    with open(root / _CIFAR100.folder / ("train" if train else "test"), "rb") as f:
        coarse = pickle.load(f, encoding="latin1")["coarse_labels"]
    return ImageSplit(images, torch.tensor(coarse, dtype=torch.int64), fine)


def load_cifar100(data_dir, download: bool = False, verify: bool = True) -> tuple[ImageSplit, ImageSplit]:
    """CIFAR-100 (train, test) with coarse and fine labels, read through
    ``torchvision.datasets.CIFAR100`` from ``data_dir/cifar-100-python``.

    ``download=True`` fetches the archive (about 170 MB) when it is not there. ``verify=False``
    skips torchvision's MD5 checks and only requires the files to exist.
    """
    root = _cifar_root(_CIFAR100, data_dir, download)
    return (_cifar100_split(root, True, download, verify), _cifar100_split(root, False, download, verify))


def _group_problems(groups, n_classes: int) -> list[str]:
    """What keeps ``groups`` (a sequence of sequences of ints) from partitioning range(n_classes)."""
    problems = [] if len(groups) >= 2 else [f"fewer than 2 groups ({len(groups)})"]
    problems += [f"group {i} is empty" for i, g in enumerate(groups) if len(g) == 0]
    counts = collections.Counter(c for g in groups for c in g)
    outside = sorted(c for c in counts if not 0 <= c < n_classes)
    repeated = sorted(c for c, k in counts.items() if k > 1)
    missing = sorted(set(range(n_classes)) - set(counts))
    for what, classes in (("out of range", outside), ("repeated", repeated), ("missing", missing)):
        if classes:
            problems.append(f"classes {what}: {classes}")
    return problems


def check_coarse_groups(coarse_groups, n_classes: int = CIFAR10_CLASSES) -> tuple[tuple[int, ...], ...]:
    """``coarse_groups`` as a tuple of tuples if it partitions the classes ``0..n_classes-1`` into
    at least 2 non-empty groups (each class in exactly one group), else a ValueError that names
    ``coarse_groups`` and says what is wrong. Group ``i`` is coarse label ``i``."""
    expected = (f"a partition of the classes 0..{n_classes - 1} into at least 2 non-empty groups "
                f"(each class in exactly one group)")
    if not (isinstance(coarse_groups, (list, tuple))
            and all(isinstance(g, (list, tuple)) and all(map(Integer().accepts, g)) for g in coarse_groups)):
        raise ValueError(f"coarse_groups must be {expected}, as a list of lists of ints; got {coarse_groups!r}")
    problems = _group_problems(coarse_groups, n_classes)
    if problems:
        raise ValueError(f"coarse_groups must be {expected}; got {coarse_groups!r}: {'; '.join(problems)}")
    return tuple(tuple(g) for g in coarse_groups)


def grouped_split(images: torch.Tensor, fine: torch.Tensor, groups, n_classes: int = CIFAR10_CLASSES) -> ImageSplit:
    """An :class:`ImageSplit` of ``images`` whose coarse label is the index of the group of
    ``groups`` (checked by :func:`check_coarse_groups`) that holds each ``fine`` class."""
    group_of = torch.empty(n_classes, dtype=torch.int64)
    for i, group in enumerate(groups):
        group_of[list(group)] = i
    return ImageSplit(images, group_of[fine], fine, n_coarse=len(groups), n_fine=n_classes)


def _cifar10_split(root: Path, train: bool, download: bool, verify: bool, groups) -> ImageSplit:
    return grouped_split(*_torchvision_split(_CIFAR10, root, train, download, verify), groups)


def load_cifar10(data_dir, download: bool = False, verify: bool = True,
                 coarse_groups=None) -> tuple[ImageSplit, ImageSplit]:
    """CIFAR-10 (train, test), read through ``torchvision.datasets.CIFAR10`` from
    ``data_dir/cifar-10-batches-py``: ``fine`` is the class (0-9) and ``coarse`` the index of the
    group of ``coarse_groups`` that holds it (a partition of the 10 classes into at least 2
    groups; None: :data:`DEFAULT_COARSE_GROUPS`, classes 0-4 against 5-9).

    ``download=True`` fetches the archive (about 170 MB) when it is not there. ``verify=False``
    skips torchvision's MD5 checks and only requires the files to exist.
    """
    groups = check_coarse_groups(DEFAULT_COARSE_GROUPS if coarse_groups is None else coarse_groups)
    root = _cifar_root(_CIFAR10, data_dir, download)
    return (_cifar10_split(root, True, download, verify, groups),
            _cifar10_split(root, False, download, verify, groups))


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


def _channel_stats(stats) -> ChannelStats:
    try:
        mean, std = (tuple(float(x) for x in v) for v in stats)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"stats must be (mean, std), each 3 channel values and std > 0, got {stats!r}")
    return ChannelStats(mean, std)


def normalize(images: torch.Tensor, stats: ChannelStats = CIFAR100_STATS) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 standardised with the channel mean and std of ``stats``
    (default: CIFAR-100's, also used for the synthetic set, whose statistics are close enough;
    :data:`CIFAR10_STATS` for CIFAR-10)."""
    _check_batch(images)
    mean, std = _channel_stats(stats)
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
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
