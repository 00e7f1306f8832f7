"""The data set interface every loader implements: images (read lazily), captions, optional labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vledge.errors import ImageDecodeError
from vledge.images import ImageInput, PreprocessSpec, normalize, open_image, resize_and_crop

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a black and white photo of a {}.",
    "a close-up photo of the {}.",
    "a low resolution photo of a {}.",
    "an image showing a {}.",
)


@dataclass
class Batch:
    pixels: np.ndarray  # float32 NCHW, preprocessed
    captions: list[str]
    labels: np.ndarray  # int64, -1 where unlabelled
    indices: np.ndarray  # the data set indices that made it into the batch
    skipped: list[str]  # paths of images that would not decode


class ImageTextDataset:
    """Base class: subclasses give ``__len__``, ``image(i)``, ``caption(i)`` and ``label(i)``.

    ``classes`` is the list of class names when the set is labelled, and ``templates`` the prompt
    templates that turn a class name into a caption (used for zero-shot evaluation too).
    ``has_captions`` is True when captions are real text rather than prompts made from class names.
    ``split`` names the split ``load_dataset`` picked (None: a set with no splits, used whole).
    """

    name: str = "dataset"
    split: str | None = None
    classes: list[str] | None = None
    templates: Sequence[str] = DEFAULT_TEMPLATES
    has_captions: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, i: int) -> ImageInput:
        raise NotImplementedError

    def caption(self, i: int, variant: int = 0) -> str:
        """The caption of item ``i``; ``variant`` picks among prompt templates where captions are made."""
        label = self.label(i)
        return self.templates[(i + variant) % len(self.templates)].format(self.classes[label])

    def label(self, i: int) -> int:
        return -1

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        return f"{self.name}: {len(self)} images, {kind}"

    def batch(self, indices: Sequence[int], spec: PreprocessSpec, *, variant: int = 0, strict: bool = False) -> Batch:
        """Decode and preprocess ``indices``. Undecodable images are logged and skipped (raised if ``strict``)."""
        pixels, kept, skipped = [], [], []
        for i in indices:
            try:
                pixels.append(resize_and_crop(open_image(self.image(int(i))), spec))
                kept.append(int(i))
            except ImageDecodeError as exc:
                if strict:
                    raise
                log.warning("skipping %s", exc)
                skipped.append(exc.path)
        arr = normalize(np.stack(pixels), spec) if pixels else np.zeros((0, 3, spec.image_size, spec.image_size), np.float32)
        return Batch(
            pixels=arr,
            captions=[self.caption(i, variant) for i in kept],
            labels=np.array([self.label(i) for i in kept], dtype=np.int64),
            indices=np.array(kept, dtype=np.int64),
            skipped=skipped,
        )


class Subset(ImageTextDataset):
    """A view on some items of another data set (splits, slices)."""

    def __init__(self, base: ImageTextDataset, indices: Sequence[int], name: str | None = None):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.name = name or base.name
        self.classes = base.classes
        self.templates = base.templates
        self.has_captions = base.has_captions

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> ImageInput:
        return self.base.image(int(self.indices[i]))

    def caption(self, i: int, variant: int = 0) -> str:
        return self.base.caption(int(self.indices[i]), variant)

    def label(self, i: int) -> int:
        return self.base.label(int(self.indices[i]))

    def batch(self, indices, spec, *, variant=0, strict=False) -> Batch:
        out = self.base.batch(self.indices[np.asarray(indices, dtype=np.int64)], spec, variant=variant, strict=strict)
        order = np.argsort(self.indices, kind="stable")
        out.indices = order[np.searchsorted(self.indices, out.indices, sorter=order)]
        return out


def split(dataset: ImageTextDataset, val_fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """A seeded random train / validation split."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_val = max(1, int(round(len(dataset) * val_fraction)))
    return Subset(dataset, np.sort(order[n_val:])), Subset(dataset, np.sort(order[:n_val]))
