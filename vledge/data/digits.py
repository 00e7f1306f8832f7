"""scikit-learn's handwritten digits (1,797 8x8 images, shipped inside its wheel): a tiny real set for tests."""

from __future__ import annotations

import numpy as np

from vledge.data.base import Batch, ImageTextDataset
from vledge.errors import ConfigError, DataError, require
from vledge.images import PreprocessSpec, preprocess_uint8_batch

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = (
    "a photo of the digit {}.",
    "a handwritten digit {}.",
    "a low resolution image of the number {}.",
    "a black and white picture of the digit {}.",
)
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def split_indices(n: int, split: str, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """The sorted indices of ``split`` in a seeded train/test permutation of ``n`` items."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[:n_test] if split == "test" else order[n_test:])


class Digits(ImageTextDataset):
    """scikit-learn ``load_digits()``: pixels 0-16 scaled to uint8 0-255, a fixed 80/20 train/test split."""

    classes = CLASSES
    templates = TEMPLATES

    def __init__(self, split: str = "train", data_dir: str | None = None):
        if split not in SPLITS:
            raise DataError(f"digits split must be 'train' or 'test', got {split!r}")
        if data_dir is not None:
            raise ConfigError(f"digits ships inside scikit-learn and reads no data_dir (got {data_dir!r}); drop it")
        datasets = require("sklearn.datasets", "digits")
        digits = datasets.load_digits()
        idx = split_indices(len(digits.target), split)
        self.pixels = np.round(digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
        self.labels = digits.target[idx].astype(np.int64)
        self.name = f"digits/{split}"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        return self.pixels[i]

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def describe(self) -> str:
        return f"{self.name}: {len(self)} 8x8 grayscale images of handwritten digits (scikit-learn), 10 classes"

    def batch(self, indices, spec: PreprocessSpec, *, variant: int = 0, strict: bool = False) -> Batch:
        # In-memory arrays always decode, so nothing is ever skipped.
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return super().batch(idx, spec, variant=variant, strict=strict)
        return Batch(
            pixels=preprocess_uint8_batch(self.pixels[idx], spec),
            captions=[self.caption(int(i), variant) for i in idx],
            labels=self.labels[idx],
            indices=idx,
            skipped=[],
        )
