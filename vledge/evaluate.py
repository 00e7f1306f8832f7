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
RECALL_RANKING = ("ordinal: candidates best score first, exactly equal scores in the order of the data (earlier "
                  "first), one candidate a rank; so of a caption repeated m times an image's own copy ranks behind "
                  "the copies before it")


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
    """Zero-shot and retrieval metrics of one model on one data set.

    ``top5`` is None with fewer than 5 classes (``not_applicable`` says why); ``recall`` holds
    ``"i2t@k"`` (image -> text) and ``"t2i@k"`` (text -> image); :meth:`clip_benchmark_metrics` gives
    the same numbers under LAION CLIP_benchmark's names.
    """

    n: int
    top1: float | None = None
    top5: float | None = None
    recall: dict[str, float] = field(default_factory=dict)  # "i2t@1", "t2i@5", ...
    skipped: int = 0
    predictions: np.ndarray | None = None  # top-1 class per image, for agreement checks
    mean_per_class_recall: float | None = None
    per_class_recall: dict[str, float] = field(default_factory=dict)  # classes with images in the set
    not_applicable: dict[str, str] = field(default_factory=dict)  # metric -> why it is None
    classes: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        return out

    def clip_benchmark_metrics(self) -> dict[str, float | None]:
        """The metrics under CLIP_benchmark's keys: ``acc1``, ``acc5``, ``mean_per_class_recall`` where the
        set is labelled, ``image_retrieval_recall@k`` (text -> image) and ``text_retrieval_recall@k``
        (image -> text) where it has captions. ``acc5`` is None (CLIP_benchmark: NaN) under 5 classes."""
        out: dict[str, float | None] = {}
        if self.top1 is not None:
            out.update(acc1=self.top1, acc5=self.top5, mean_per_class_recall=self.mean_per_class_recall)
        for key, value in self.recall.items():
            direction, k = key.split("@")
            out[f"{'image' if direction == 't2i' else 'text'}_retrieval_recall@{k}"] = value
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


def recall_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """``ks`` as distinct whole numbers of at least 1, in increasing order, else a ConfigError."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ConfigError(f"recall k values must be whole numbers of at least 1, e.g. 1,5,10; got {list(ks)}")
    return tuple(sorted({int(k) for k in ks}))


def _pair_ranks(sim: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row i's pair is candidate ``rows[i]``; its ordinal rank (0 = first) counts every candidate scoring higher
    and every one scoring the same that comes earlier in the data."""
    pair = sim[np.arange(len(rows)), rows][:, None]
    earlier = np.arange(sim.shape[1]) < rows[:, None]
    return ((sim > pair) | ((sim == pair) & earlier)).sum(1)


def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, ks: Sequence[int] = RECALL_KS, chunk: int = 2048,
                caption_ids: np.ndarray | None = None) -> dict[str, float]:
    """Image i and text i are the pair; ``"i2t@k"`` and ``"t2i@k"`` are the shares of queries whose pair ranks
    among the first k. Ranking is ordinal (``RECALL_RANKING``): exact ties go to the candidate earlier in the
    data, as a stable sort orders them, so a caption repeated m times is a hit at 1 for at most one of its
    images. ``caption_ids`` (equal ids: the same caption text) makes repeated captions tie exactly, whatever
    rounding their separate embeddings had. Computed in chunks of queries (memory: chunk x len(image_emb)).
    """
    n = len(image_emb)
    ids = np.arange(n) if caption_ids is None else np.asarray(caption_ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    texts = text_emb[first]  # one row per distinct caption: its copies share every score bit for bit
    i2t_rank = np.empty(n, dtype=np.int64)
    t2i_rank = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        i2t_rank[rows] = _pair_ranks((image_emb[rows] @ texts.T)[:, inverse], rows)
        t2i_rank[rows] = _pair_ranks(texts[inverse[rows]] @ image_emb.T, rows)
    out = {}
    for k in recall_ks(ks):
        out[f"i2t@{k}"] = float((i2t_rank < k).mean())
        out[f"t2i@{k}"] = float((t2i_rank < k).mean())
    return out


def zero_shot_metrics(report: EvalReport, scores: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> None:
    """Top-1, top-5 (None under 5 classes), per-class and mean per-class recall into ``report``.

    ``scores`` (images, classes); ties go to the lower class index, as an argmax gives them."""
    order = np.argsort(-scores, axis=1, kind="stable")
    report.predictions = order[:, 0]
    report.top1 = float((order[:, 0] == truth).mean())
    if len(classes) >= 5:
        report.top5 = float((order[:, :5] == truth[:, None]).any(1).mean())
    else:
        report.top5 = None
        report.not_applicable["acc5"] = (f"only {len(classes)} classes: top-5 needs at least 5 (every image "
                                         "would count as a hit)")
    present = np.unique(truth)
    report.per_class_recall = {classes[c]: float((report.predictions[truth == c] == c).mean()) for c in present}
    report.mean_per_class_recall = float(np.mean(list(report.per_class_recall.values())))


def evaluate(
    embedder: Embedder,
    data: ImageTextDataset,
    *,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    progress: bool = False,
    ks: Sequence[int] = RECALL_KS,
) -> EvalReport:
    """Zero-shot top-1/top-5 and (mean) per-class recall where the data is labelled; image<->text recall@k
    (``ks``) where captions are real. ``classes`` (the names to prompt with, one per class of the data, in
    its class order) and ``templates`` default to the data set's."""
    classes = list(classes or data.classes or [])
    templates = list(templates or data.templates)
    ks = recall_ks(ks)
    if data.classes and len(classes) != len(data.classes):
        raise ConfigError(f"{len(classes)} class names given for the {len(data.classes)} classes of "
                          f"{data.describe()}; give one name per class, in its order: {data.classes[:5]}...")
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
    report = EvalReport(n=len(image_emb), skipped=skipped, classes=classes if class_emb is not None else [],
                        templates=templates if class_emb is not None else [])
    labelled = labels_arr >= 0
    if class_emb is not None and labelled.any():
        zero_shot_metrics(report, image_emb[labelled] @ class_emb.T, labels_arr[labelled], classes)
    if data.has_captions:
        distinct, caption_ids = np.unique(np.array(captions, dtype=object), return_inverse=True)
        text_emb = _normalize(embedder.embed_texts(list(distinct)))[caption_ids]  # each distinct caption once
        report.recall = recall_at_k(image_emb, text_emb, ks, caption_ids=caption_ids)
    return report


def format_report(report: EvalReport, title: str = "") -> str:
    """A small table for the terminal."""
    rows = [("images", str(report.n))]
    if report.top1 is not None:
        top5 = f"{report.top5:.4f}" if report.top5 is not None else f"n/a ({len(report.classes)} classes)"
        rows += [("zero-shot top-1", f"{report.top1:.4f}"), ("zero-shot top-5", top5),
                 ("mean per-class recall", f"{report.mean_per_class_recall:.4f}")]
    rows += [(f"recall {k}", f"{v:.4f}") for k, v in report.recall.items()]
    if report.skipped:
        rows.append(("skipped (undecodable)", str(report.skipped)))
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def model_identity(embedder: Embedder, path) -> dict:
    """What was evaluated: a bundle by the sha256 of its manifest (which lists every file's sha256), a
    checkpoint by the sha256 over its folder's file names and contents."""
    if isinstance(embedder, RuntimeEmbedder):
        return {"path": str(path), "kind": "bundle", "sha256": embedder.edge.info().get("manifest_sha256"),
                "hash_of": "the bundle manifest"}
    from vledge.bundle import folder_fingerprint

    return {"path": str(path), "kind": "checkpoint", "sha256": folder_fingerprint(path),
            "hash_of": "the folder's files"}


def evaluation_record(report: EvalReport, embedder: Embedder, model_path, data: ImageTextDataset,
                      split: str | None) -> dict:
    """The JSON ``vledge eval --json`` writes: CLIP_benchmark's ``metrics`` keys, and what produced them
    (model hash, data and split, classes and templates, vledge version)."""
    from vledge.version import __version__

    return {
        "model": model_identity(embedder, model_path),
        "dataset": data.describe(),
        "split": data.split,
        "split_requested": split,
        "images": report.n,
        "skipped": report.skipped,
        "metrics": report.clip_benchmark_metrics(),
        "not_applicable": report.not_applicable,
        "per_class_recall": report.per_class_recall,
        "prompts": {"classes": report.classes, "templates": report.templates},
        "recall_ties": RECALL_RANKING,
        "vledge_version": __version__,
    }


def load_embedder(path, device: str = "auto", allow_pickle: bool = False, strict: bool = False) -> Embedder:
    """A bundle (``vledge.json``) runs through the edge runtime (``device``, ``strict``: see
    :func:`vledge.load`); anything else loads as a PyTorch checkpoint (``allow_pickle``: see
    :func:`vledge.models.load_teacher`)."""
    from pathlib import Path

    from vledge.bundle import MANIFEST

    if (Path(path) / MANIFEST).is_file():
        import vledge.runtimes

        return RuntimeEmbedder(vledge.runtimes.load(path, device=device, strict=strict))
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
