"""Writes a tiny CIFAR-100 in the on-disk format of the real archive, for tests without a download.

The real ``cifar-100-python/{train,test,meta}`` files are Python 2 pickles of dicts; read with
``pickle.load(f, encoding="latin1")`` (as torchvision does) they give str keys: ``data`` (uint8
[N, 3072], each row the R, G and B planes of a 32x32 image), ``fine_labels`` and
``coarse_labels`` (lists of ints), ``filenames`` and ``batch_label``; ``meta`` holds
``fine_label_names`` and ``coarse_label_names``. The tiny files load to the same objects.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-100-python"


def coarse_of_fine(seed: int = 0) -> np.ndarray:
    """A fixed fine -> coarse map with 5 fine classes per coarse class that is not ``fine // 5``
    (neither is the real one), so that a loader computing it instead of reading it would fail."""
    perm = np.random.default_rng(seed).permutation(100)
    mapping = np.empty(100, dtype=np.int64)
    mapping[perm] = np.arange(100) // 5
    return mapping


def write_tiny_cifar100(root, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Writes ``root/cifar-100-python/{train,test,meta}`` and ``root/cifar-100-python.tar.gz`` with
    random images; returns ``root``, the ``data_dir`` to load from."""
    root = Path(root)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mapping = coarse_of_fine(seed)
    for name, n, label in (("train", n_train, "training batch 1 of 1"), ("test", n_test, "testing batch 1 of 1")):
        fine = rng.integers(0, 100, n)
        entry = {
            "filenames": [f"image_{name}_{i:05d}.png" for i in range(n)],
            "batch_label": label,
            "fine_labels": [int(f) for f in fine],
            "coarse_labels": [int(mapping[f]) for f in fine],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    with tarfile.open(root / f"{FOLDER}.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=FOLDER)
    return root


def read_entry(root, name: str) -> dict:
    """One pickle of the archive, read the way torchvision reads it."""
    with open(Path(root) / FOLDER / name, "rb") as f:
        return pickle.load(f, encoding="latin1")
