"""Fashion-MNIST from its four standard IDX files (Debian's dataset-fashion-mnist, or any folder)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vledge.data.base import Batch, ImageTextDataset
from vledge.errors import DataError
from vledge.images import PreprocessSpec, preprocess_uint8_batch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_INSTALL_HINT = "install it with: apt-get install dataset-fashion-mnist, or pass --data-dir FOLDER"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {tuple(dims)}, found {body.size} bytes")
    return body.reshape(tuple(dims))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}; {_INSTALL_HINT}")


class FashionMNIST(ImageTextDataset):
    name = "fashion-mnist"
    classes = CLASSES

    def __init__(self, split: str = "train", data_dir: str | os.PathLike | None = None):
        if split not in _FILES:
            raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        folder = Path(data_dir or DEFAULT_DIR)
        if not folder.is_dir():
            raise DataError(f"Fashion-MNIST folder not found: {folder}; {_INSTALL_HINT}")
        images, labels = (_find(folder, stem) for stem in _FILES[split])
        self.pixels = read_idx(images)  # (N, 28, 28) uint8
        self.labels = read_idx(labels).astype(np.int64)
        if len(self.pixels) != len(self.labels):
            raise DataError(f"{images} and {labels} hold different numbers of items")
        self.name = f"fashion-mnist/{split}"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        return self.pixels[i]

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def batch(self, indices, spec: PreprocessSpec, *, variant: int = 0, strict: bool = False) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        return Batch(
            pixels=preprocess_uint8_batch(self.pixels[idx], spec),
            captions=[self.caption(int(i), variant) for i in idx],
            labels=self.labels[idx],
            indices=idx,
            skipped=[],
        )
