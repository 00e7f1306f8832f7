"""Data sets behind one call: ``load_dataset("fashion-mnist")``, ``load_dataset("photos/")``.

A source is a built-in name, a captions file (``.csv`` / ``.jsonl``), a folder holding ``captions.csv`` or
``captions.jsonl``, or an ImageFolder tree (one subfolder per class). A folder with ``train/`` and ``test/``
(or ``val/``) subfolders holds its splits there; any other folder or file is one set, whatever ``split`` says
(hold part of it out with ``split(dataset, val_fraction)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from vledge.data.base import Batch, ImageTextDataset, Subset, split
from vledge.data.captions import CAPTIONS_SUFFIXES, CaptionsDataset
from vledge.data.digits import Digits
from vledge.data.fashion_mnist import FashionMNIST
from vledge.data.imagefolder import ImageFolderDataset, class_folders
from vledge.errors import ConfigError, DataError
from vledge.registry import Registry

log = logging.getLogger(__name__)

DATASETS: Registry[Callable[[str, str | None], ImageTextDataset]] = Registry("data set")
DATASETS.register("fashion-mnist", FashionMNIST)
DATASETS.register("digits", Digits)

CAPTIONS_FILES = ("captions.csv", "captions.jsonl")
# Folder names accepted for each split, the requested name first.
SPLIT_FOLDERS = {
    "train": ("train",),
    "test": ("test", "val", "validation"),
    "val": ("val", "validation", "test"),
    "validation": ("validation", "val", "test"),
}
_SOURCES_HINT = (
    "or give a path: a captions file (.csv / .jsonl with path,caption[,label]), "
    "a folder holding captions.csv or captions.jsonl, or an ImageFolder tree (one subfolder per class)"
)

__all__ = [
    "Batch", "CaptionsDataset", "DATASETS", "Digits", "FashionMNIST", "ImageFolderDataset",
    "ImageTextDataset", "Subset", "load_dataset", "split",
]


def load_dataset(source: str | os.PathLike, split: str | None = "train", data_dir: str | None = None, *,
                 strict_split: bool = False) -> ImageTextDataset:
    """Load a data set by built-in name or path; ``data_dir`` only applies to built-in sets.

    ``split=None`` asks for the evaluation data: the ``test`` split of a built-in set or a split folder,
    the whole of a captions file or a plain folder. A file or plain folder is one set: asked for another
    split it is used whole with a warning, or, with ``strict_split``, refused (DataError).
    Raises ConfigError for an unknown name (with a "did you mean"), DataError for a missing path or
    unreadable / empty data.
    """
    text = os.fspath(source)
    if text in DATASETS:
        dataset = DATASETS.get(text)(split or "test", data_dir)
        dataset.split = split or "test"
        return dataset
    path = Path(text).expanduser()
    if not _looks_like_path(text, path):
        try:
            DATASETS.get(text)  # not registered, so this raises, with a "did you mean"
        except ConfigError as exc:
            raise ConfigError(f"{exc}; {_SOURCES_HINT}") from None
    if not path.exists():
        raise DataError(f"data set path not found: {path}")
    if data_dir is not None:
        raise ConfigError(f"data_dir only applies to built-in data sets ({', '.join(DATASETS)}); drop it for {path}")
    if path.is_file():
        if path.suffix.lower() not in CAPTIONS_SUFFIXES:
            raise DataError(f"{path} is not a captions file; {_SOURCES_HINT}")
        return _whole(CaptionsDataset(path), split, strict_split)
    return _from_folder(path, split, strict_split)


def _looks_like_path(text: str, path: Path) -> bool:
    return path.exists() or os.sep in text or "/" in text or path.suffix.lower() in CAPTIONS_SUFFIXES


def _captions_file(folder: Path) -> Path | None:
    found = [folder / name for name in CAPTIONS_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{folder} holds both {CAPTIONS_FILES[0]} and {CAPTIONS_FILES[1]}; keep one or pass the file")
    return found[0] if found else None


def _split_folders(folder: Path) -> list[str]:
    present = set(class_folders(folder))
    has_eval = any(name in present for name in SPLIT_FOLDERS["test"])
    return sorted(present & {"train", "test", "val", "validation"}) if "train" in present and has_eval else []


def _from_folder(folder: Path, split: str | None, strict: bool) -> ImageTextDataset:
    captions = _captions_file(folder)
    if captions is not None:
        return _whole(CaptionsDataset(captions), split, strict)
    splits = _split_folders(folder)
    if not splits:
        return _whole(ImageFolderDataset(folder), split, strict)
    split = split or "test"
    chosen = next((name for name in SPLIT_FOLDERS.get(split, ()) if name in splits), None)
    if chosen is None:
        raise DataError(f"{folder} has no {split!r} split; its split folders are {splits}")
    split_root = folder / chosen
    captions = _captions_file(split_root)
    if captions is not None:
        dataset = CaptionsDataset(captions)
    else:
        # Classes from every split, so that label indices agree between train and test.
        folders = sorted({name for s in splits for name in class_folders(folder / s)})
        dataset = ImageFolderDataset(split_root, folders=folders, name=f"{folder.name}/{chosen}")
    dataset.split = chosen
    return dataset


def _whole(dataset: ImageTextDataset, split: str | None, strict: bool) -> ImageTextDataset:
    if split is not None and strict:
        raise DataError(
            f"{dataset.name} has no {split!r} split: a captions file or a folder without train/ and test/ "
            "subfolders is one set. Leave the split out to use all of it, point at a separate file or folder "
            f"of held-out images, or arrange the folder as train/ and test/ subfolders (then {split!r} picks "
            "test/, or val/)")
    if split not in (None, "train"):
        # Loud on purpose: evaluating on "test" here may mean evaluating on training data.
        log.warning("%s has no separate %r split; using all of it (it may overlap the training data)",
                    dataset.name, split)
    return dataset
