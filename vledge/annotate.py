"""Auto-annotation: label every image of a folder with its top labels, mark the uncertain ones for review,
and list the images that will not decode, without ever stopping for one.

Images are decoded and cut to the tower's size one batch ahead in a background thread, so a folder of
large photos holds one batch of small arrays in memory, not the photos.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from vledge.data.prefetch import prefetched
from vledge.errors import ConfigError, DataError, ImageDecodeError, OutputError
from vledge.images import open_image, resize_and_crop

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Annotation:
    """One image: its top (label, probability) pairs, whether it needs a person's look, or why it failed."""

    path: str  # relative to the folder
    top: list[tuple[str, float]]
    review: bool = False
    reason: str | None = None  # why it is in the review bucket: "score" or "margin"
    error: str | None = None  # the decoding error of a bad image (then top is empty)

    @property
    def margin(self) -> float | None:
        if len(self.top) < 2:
            return None
        return self.top[0][1] - self.top[1][1]

    def to_dict(self) -> dict:
        return {"path": self.path, "status": "error" if self.error else ("review" if self.review else "ok"),
                "labels": [{"label": n, "score": round(s, 6)} for n, s in self.top],
                "margin": None if self.margin is None else round(self.margin, 6), "reason": self.reason,
                "error": self.error}


def find_images(folder: str | os.PathLike, recursive: bool = True) -> tuple[list[Path], int]:
    """Image files under ``folder`` by suffix, sorted; and how many other files were passed over."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(files) - len(images)


def annotate(model, folder: str | os.PathLike, labels: Sequence[str] | None = None, *,
             templates: Sequence[str] | None = None, top_k: int = 3, review_below: float = 0.5,
             review_margin: float = 0.1, recursive: bool = True, batch_size: int = 32) -> Iterator[Annotation]:
    """Annotations of every image under ``folder``, in path order.

    An image goes to the review bucket when its best probability is under ``review_below`` or leads
    the second by less than ``review_margin``. Without ``labels``, the bundle's compiled label set.
    """
    if not 0 <= review_below <= 1 or not 0 <= review_margin <= 1:
        raise ConfigError("review_below and review_margin are probabilities in [0, 1]")
    if top_k < 1 or batch_size < 1:
        raise ConfigError("top_k and batch_size must be at least 1")
    if labels is not None and len(set(labels)) < 2:
        raise ConfigError("give at least two labels: one label alone has probability 1 on every image")
    root = Path(folder)
    paths, others = find_images(root, recursive)
    if others:
        log.info("%s: %d files without an image suffix passed over", root, others)
    spec = model.manifest.preprocess
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def decode(batch: list[Path]) -> list:
        out = []
        for path in batch:
            try:
                out.append(resize_and_crop(open_image(path), spec))
            except ImageDecodeError as exc:
                out.append(exc)
            except (OSError, ValueError) as exc:  # Pillow's less common failures, named anyway
                out.append(ImageDecodeError(path, f"{type(exc).__name__}: {exc}"))
        return out

    for batch, decoded in prefetched(decode, batches):
        good = [(p, px) for p, px in zip(batch, decoded) if not isinstance(px, Exception)]
        ranked = iter(model.classify([px for _, px in good], labels, top_k=max(top_k, 2), templates=templates)
                      if good else [])
        for path, pixels in zip(batch, decoded):
            rel = path.relative_to(root).as_posix()
            if isinstance(pixels, Exception):
                log.warning("%s", pixels)
                yield Annotation(rel, [], error=str(pixels))
                continue
            top = next(ranked).top
            reason = "score" if top[0][1] < review_below else None
            if reason is None and len(top) > 1 and top[0][1] - top[1][1] < review_margin:
                reason = "margin"
            yield Annotation(rel, top[:top_k], reason is not None, reason)


def write_annotations(annotations: Iterable[Annotation], out: str | os.PathLike, top_k: int) -> dict:
    """Write CSV (``.csv``) or JSON lines (any other suffix) to ``out``; returns the counts."""
    out = Path(out)
    counts = {"images": 0, "ok": 0, "review": 0, "error": 0}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = _csv_writer(fh, top_k) if out.suffix.lower() == ".csv" else None
            for a in annotations:
                row = a.to_dict()
                counts["images"] += 1
                counts[row["status"]] += 1
                if writer is None:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:
                    writer(row)
        os.replace(tmp, out)  # a reader never sees half a file
    except OSError as exc:
        raise OutputError(f"cannot write {out} ({exc.strerror or exc}); choose a writable --out") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return counts


def _csv_writer(fh, top_k: int):
    columns = ["path", "status"] + [f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "score")]
    columns += ["margin", "reason", "error"]
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()

    def write(row: dict) -> None:
        flat = {k: row[k] for k in ("path", "status", "margin", "reason", "error")}
        for i, entry in enumerate(row["labels"], 1):
            flat[f"label_{i}"], flat[f"score_{i}"] = entry["label"], entry["score"]
        writer.writerow(flat)

    return write
