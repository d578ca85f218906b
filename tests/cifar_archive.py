"""Writes a tiny CIFAR-100 or CIFAR-10 in the on-disk format of the real archives, for tests
without a download.

The real files are Python 2 pickles of dicts; read with ``pickle.load(f, encoding="latin1")`` (as
torchvision does) they give str keys. In both archives ``data`` is uint8 [N, 3072], each row the
R, G and B planes of a 32x32 image, beside ``filenames`` and ``batch_label``.

* ``cifar-100-python/{train,test}`` hold ``fine_labels`` and ``coarse_labels`` (lists of ints);
  ``meta`` holds ``fine_label_names`` and ``coarse_label_names``.
* ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` hold ``labels`` (a list of ints);
  ``batches.meta`` holds ``label_names``, ``num_cases_per_batch`` and ``num_vis``.

The tiny files load to the same objects.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-100-python"
FOLDER10 = "cifar-10-batches-py"
TRAIN_BATCHES10 = [f"data_batch_{i}" for i in range(1, 6)]


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


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_cifar10(root, n_per_batch: int = 12, n_test: int = 20, seed: int = 0) -> Path:
    """Writes ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
    ``root/cifar-10-python.tar.gz`` with random images, each of the 5 training batches
    ``n_per_batch`` of them; returns ``root``, the ``data_dir`` to load from."""
    root = Path(root)
    folder = root / FOLDER10
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = [(name, n_per_batch, f"training batch {i + 1} of 5") for i, name in enumerate(TRAIN_BATCHES10)]
    for name, n, label in batches + [("test_batch", n_test, "testing batch 1 of 1")]:
        _dump(folder / name, {
            "batch_label": label,
            "labels": [int(c) for c in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"image_{name}_{i:05d}.png" for i in range(n)],
        })
    _dump(folder / "batches.meta", {"num_cases_per_batch": n_per_batch, "num_vis": 3072,
                                    "label_names": [f"class_{i}" for i in range(10)]})
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=FOLDER10)
    return root


def read_entry(root, name: str, folder: str = FOLDER) -> dict:
    """One pickle of the archive (CIFAR-100 unless ``folder`` says otherwise), read the way
    torchvision reads it."""
    with open(Path(root) / folder / name, "rb") as f:
        return pickle.load(f, encoding="latin1")
