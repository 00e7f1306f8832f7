"""An ImageFolder tree: one subfolder per class, captions made from class names through prompt templates."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from vledge.data.base import DEFAULT_TEMPLATES, ImageTextDataset
from vledge.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def class_name(folder_name: str) -> str:
    """The class name a folder stands for: underscores and hyphens become spaces ("ankle_boot" -> "ankle boot")."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


def class_folders(root: Path) -> list[str]:
    """The sorted names of the visible subfolders of ``root``."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped, extension case-insensitive), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath, name) for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


class ImageFolderDataset(ImageTextDataset):
    """Images labelled by the folder that holds them.

    ``folders`` fixes the class order (and so the label indices); pass the union of the class folders of
    all splits so that train and test agree even when one split lacks a class. By default: the subfolders
    of ``root``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        folders: Sequence[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        name: str | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        folders = list(folders) if folders is not None else class_folders(self.root)
        if not folders:
            raise DataError(
                f"{self.root} has no class subfolders; put the images in one folder per class "
                "(root/cat/1.jpg, root/dog/2.jpg) or list them in captions.csv (path,caption)"
            )
        self.classes = [class_name(f) for f in folders]
        clashes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if clashes:
            raise DataError(f"{self.root}: class folders that differ only in '_' / '-' / spaces: {clashes}; rename one")
        self.templates = tuple(templates)
        self.paths: list[str] = []
        self.labels: list[int] = []
        for label, folder in enumerate(folders):
            files = image_files(self.root / folder) if (self.root / folder).is_dir() else []
            if not files:
                log.warning("%s: class %r has no images", self.root, self.classes[label])
            self.paths += [str(p) for p in files]
            self.labels += [label] * len(files)
        if not self.paths:
            raise DataError(
                f"{self.root} holds no images in its class folders "
                f"(extensions read: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        self.name = name or self.root.name or str(self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> str:
        return self.paths[i]

    def label(self, i: int) -> int:
        return self.labels[i]

    def describe(self) -> str:
        return f"{self.name}: {len(self)} images in {len(self.classes)} class folders under {self.root}"
