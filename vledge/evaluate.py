"""Zero-shot classification and retrieval metrics, for PyTorch models and bundles alike.

Everything here works on normalised numpy embeddings from an ``Embedder``; torch is only
imported by ``TorchEmbedder``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

import numpy as np

from vledge.data.base import ImageTextDataset
from vledge.errors import ConfigError, DataError
from vledge.images import PreprocessSpec
from vledge.progress import progress_bar
from vledge.text import fill_templates

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)


class Embedder(Protocol):
    """What evaluation needs from a model: its preprocessing and two normalised-embedding functions."""

    preprocess: PreprocessSpec

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class TorchEmbedder:
    """An ``Embedder`` over a PyTorch DualEncoder (teacher or student)."""

    def __init__(self, model, text_batch: int = 256):
        self.model = model
        self.preprocess = model.preprocess
        self.text_batch = text_batch

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(pixels).to(self.model.device())
            return self.model.encode_image(x).float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed_texts(list(texts), self.text_batch)


@dataclass
class EvalReport:
    n: int
    top1: float | None = None
    top5: float | None = None
    recall: dict[str, float] = field(default_factory=dict)  # "i2t@1", "t2i@5", ...
    skipped: int = 0
    predictions: np.ndarray | None = None  # top-1 class per image, for agreement checks

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        return out


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(embedder: Embedder, classes: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """Prompt ensemble: the normalised mean of each class's normalised template embeddings."""
    if not classes:
        raise ConfigError("zero-shot classification needs at least one class name")
    prompts = fill_templates(classes, templates)
    emb = embedder.embed_texts(prompts).reshape(len(classes), len(templates), -1)
    return _normalize(_normalize(emb).mean(axis=1))


def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, ks: Sequence[int] = RECALL_KS, chunk: int = 2048) -> dict[str, float]:
    """Image i and text i are the pair; ranks computed in chunks so memory stays flat."""
    n = len(image_emb)
    i2t_rank = np.empty(n, dtype=np.int64)
    t2i_rank = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        sim = image_emb[rows] @ text_emb.T
        i2t_rank[rows] = (sim > sim[np.arange(len(rows)), rows][:, None]).sum(1)
        sim = text_emb[rows] @ image_emb.T
        t2i_rank[rows] = (sim > sim[np.arange(len(rows)), rows][:, None]).sum(1)
    out = {}
    for k in ks:
        out[f"i2t@{k}"] = float((i2t_rank < k).mean())
        out[f"t2i@{k}"] = float((t2i_rank < k).mean())
    return out


def evaluate(
    embedder: Embedder,
    data: ImageTextDataset,
    *,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    progress: bool = False,
) -> EvalReport:
    """Zero-shot top-1/top-5 where the data is labelled; image<->text recall@k where captions are real."""
    classes = list(classes or data.classes or [])
    templates = list(templates or data.templates)
    if batch_size < 1 or (max_samples is not None and max_samples < 1):
        raise ConfigError(f"batch_size and max_samples must be at least 1, got {batch_size} and {max_samples}")
    n = len(data) if max_samples is None else min(len(data), max_samples)
    if n == 0:
        raise DataError(f"nothing to evaluate: {data.describe()}")
    class_emb = class_embeddings(embedder, classes, templates) if classes else None
    images, captions, labels, skipped = [], [], [], 0
    for start in progress_bar(range(0, n, batch_size), desc="eval", enabled=progress):
        batch = data.batch(range(start, min(n, start + batch_size)), embedder.preprocess)
        skipped += len(batch.skipped)
        if len(batch.indices) == 0:
            continue
        images.append(embedder.embed_pixels(batch.pixels))
        captions += batch.captions
        labels.append(batch.labels)
    if not images:
        raise DataError(f"no image of {data.describe()} could be decoded")
    image_emb = np.concatenate(images)
    labels_arr = np.concatenate(labels)
    report = EvalReport(n=len(image_emb), skipped=skipped)
    labelled = labels_arr >= 0
    if class_emb is not None and labelled.any():
        scores = image_emb[labelled] @ class_emb.T
        order = np.argsort(-scores, axis=1)
        truth = labels_arr[labelled][:, None]
        report.top1 = float((order[:, :1] == truth).any(1).mean())
        report.top5 = float((order[:, :5] == truth).any(1).mean())
        report.predictions = order[:, 0]
    if data.has_captions:
        report.recall = recall_at_k(image_emb, _normalize(embedder.embed_texts(captions)))
    return report


def format_report(report: EvalReport, title: str = "") -> str:
    """A small table for the terminal."""
    rows = [("images", str(report.n))]
    if report.top1 is not None:
        rows += [("zero-shot top-1", f"{report.top1:.4f}"), ("zero-shot top-5", f"{report.top5:.4f}")]
    rows += [(f"recall {k}", f"{v:.4f}") for k, v in report.recall.items()]
    if report.skipped:
        rows.append(("skipped (undecodable)", str(report.skipped)))
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def load_embedder(path, device: str = "auto", allow_pickle: bool = False) -> Embedder:
    """A bundle (``vledge.json``) runs through the edge runtime; anything else loads as a PyTorch checkpoint
    (``allow_pickle``: see :func:`vledge.models.load_teacher`)."""
    from pathlib import Path

    from vledge.bundle import MANIFEST

    if (Path(path) / MANIFEST).is_file():
        import vledge.runtimes

        return RuntimeEmbedder(vledge.runtimes.load(path, device=device))
    from vledge.models import load_teacher

    return TorchEmbedder(load_teacher(path, allow_pickle=allow_pickle))


class RuntimeEmbedder:
    """An ``Embedder`` over a loaded bundle (``vledge.load``): the same metrics for both worlds."""

    def __init__(self, edge_model):
        self.edge = edge_model
        self.preprocess = edge_model.manifest.preprocess

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.edge.encode_pixels(pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.edge.encode_text(list(texts))
