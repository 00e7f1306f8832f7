"""EdgeModel: what ``vledge.load`` returns. Preprocessing, batching, normalisation and zero-shot
classification in numpy, over whichever runtime backend was chosen."""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np

from vledge import __version__
from vledge.cpu import host_cpu
from vledge.errors import ConfigError
from vledge.images import ImageInput, as_image_list, preprocess
from vledge.label_set import LabelSet
from vledge.runtimes.base import Runtime
from vledge.text import TextTokenizer, fill_templates

log = logging.getLogger(__name__)

DEFAULT_BATCH = 32  # chunk size for dynamic-batch towers: keeps memory flat on long inputs
_CACHE_SIZE = 8  # label lists whose text embeddings are kept


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-12)


class EdgeModel:
    """A loaded dual encoder: ``encode_image``, ``encode_text``, ``classify``, ``info``.

    Safe to share between threads. Embeddings are L2-normalised float32 arrays of shape (n, dim).
    """

    def __init__(self, runtime: Runtime, tokenizer: TextTokenizer, *, label_set: LabelSet | None, report: dict):
        self.runtime = runtime
        self.manifest = runtime.manifest
        self.tokenizer = tokenizer
        self.label_set = label_set
        self._report = report
        # (labels, templates) as given -> (distinct names, logit_scale * label embeddings, transposed)
        self._label_cache: dict[tuple, tuple[list[str], np.ndarray]] = {}
        self._cache_lock = threading.Lock()
        self._batch = {kind: self._static_batch(kind) for kind in self.manifest.towers}
        self._feed_specs = {kind: [(t.name, np.dtype(t.dtype)) for t in tower.inputs]
                            for kind, tower in self.manifest.towers.items()}
        self._static_seq = "text" in self.manifest.towers and any(
            isinstance(shape[-1], int) for shape in runtime.input_shapes("text").values())

    @property
    def embed_dim(self) -> int:
        return self.manifest.embed_dim

    @property
    def logit_scale(self) -> float:
        return self.manifest.logit_scale

    def _static_batch(self, kind: str) -> int | None:
        first = next(iter(self.runtime.input_shapes(kind).values()))
        return first[0] if first and isinstance(first[0], int) else None

    def encode_image(self, images: ImageInput | Sequence[ImageInput], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Embed images (PIL images, HWC/HW uint8 arrays or paths; one or many)."""
        items = as_image_list(images)
        if not items:
            raise ConfigError("no images given")
        step = self._batch.get("image") or batch_size
        chunks = [preprocess(items[i : i + step], self.manifest.preprocess) for i in range(0, len(items), step)]
        return self._embed("image", [[c] for c in chunks])

    def encode_pixels(self, pixels: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Embed an already preprocessed float32 NCHW batch (what ``vledge.images.preprocess`` returns)."""
        if pixels.ndim != 4 or len(pixels) == 0:
            raise ConfigError(f"expected a non-empty NCHW batch of pixels, got shape {pixels.shape}")
        step = self._batch.get("image") or batch_size
        return self._embed("image", [[pixels[i : i + step]] for i in range(0, len(pixels), step)])

    def encode_text(self, texts: str | Sequence[str], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Embed texts (one string or many); texts longer than the tokenizer's max length are truncated."""
        self.runtime.check_kind("text")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ConfigError("no texts given")
        step = self._batch.get("text") or batch_size
        chunks = [list(self.tokenizer(texts[i : i + step], pad_to_max=self._static_seq))
                  for i in range(0, len(texts), step)]
        return self._embed("text", chunks)

    def _embed(self, kind: str, chunks: list[list[np.ndarray]]) -> np.ndarray:
        specs = self._feed_specs[kind]
        static = self._batch.get(kind)
        out = []
        for arrays in chunks:
            n = len(arrays[0])
            if static:
                # Pad with copies of the last row: an all-padding row could give NaNs in attention.
                arrays = [np.pad(a, [(0, static - n)] + [(0, 0)] * (a.ndim - 1), mode="edge") for a in arrays]
            feeds = {name: a.astype(dtype, copy=False) for (name, dtype), a in zip(specs, arrays)}
            out.append(self.runtime.run(kind, feeds)[:n])
        return l2_normalise(out[0] if len(out) == 1 else np.concatenate(out))

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """One normalised embedding per label: the mean over prompt templates (``"{}"``: the label as is)."""
        prompts = fill_templates(labels, templates or ["{}"])  # validates the templates
        per_prompt = self.encode_text(prompts).reshape(len(labels), len(prompts) // len(labels), -1)
        return l2_normalise(per_prompt.mean(axis=1))

    def classify(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        templates: Sequence[str] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Zero-shot classification: per image, the ``top_k`` (label, probability) pairs, best first.

        Probabilities are a softmax over ``logit_scale * cosine`` against every label. Without
        ``labels`` the bundle's compiled label set is used. Labels are turned into prompts with
        ``templates`` (default: the templates the compiled label set was made with, else the label
        text as is); duplicate labels are dropped with a warning, keeping the first. The label
        embeddings of the last few label lists are cached, so a stream of frames encodes them once.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        names, weights = self._label_weights(labels, templates)
        logits = self.encode_image(images) @ weights
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits, out=logits)
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")[:, : min(top_k, len(names))]
        return [[(names[j], row[j]) for j in idx] for row, idx in zip(probs.tolist(), order.tolist())]

    def _label_weights(self, labels, templates) -> tuple[list[str], np.ndarray]:
        try:
            key = (None if labels is None else tuple(labels), None if templates is None else tuple(templates))
            cached = self._label_cache.get(key)
        except TypeError:  # unhashable entries: _resolve_labels names the problem
            key, cached = None, None
        if cached is not None:
            return cached
        names, embeddings = self._resolve_labels(labels, templates)
        resolved = (names, np.ascontiguousarray((self.logit_scale * embeddings).T, dtype=np.float32))
        if key is not None:
            with self._cache_lock:
                if len(self._label_cache) >= _CACHE_SIZE:
                    self._label_cache.pop(next(iter(self._label_cache)))
                self._label_cache[key] = resolved
        return resolved

    def _resolve_labels(self, labels, templates) -> tuple[list[str], np.ndarray]:
        compiled = self.label_set
        if labels is None:
            if compiled is None:
                raise ConfigError(
                    "no labels given and this bundle has no compiled label set; "
                    "pass labels=[...], e.g. model.classify(image, ['cat', 'dog'])"
                )
            if compiled.embeddings is not None and templates is None:
                return compiled.names, compiled.embeddings
            labels = compiled.names
        if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
            raise ConfigError("labels must be a list of strings, e.g. ['cat', 'dog']")
        names = list(dict.fromkeys(labels))
        if not names:
            raise ConfigError("labels is empty; pass at least one label")
        if len(names) != len(labels):
            log.warning("duplicate labels dropped (first kept): %d given, %d distinct", len(labels), len(names))
        if templates is None and compiled is not None:
            templates = compiled.templates
        if (compiled is not None and compiled.embeddings is not None and names == compiled.names
                and templates is not None and list(templates) == compiled.templates):
            return names, compiled.embeddings  # the compiled set given by name: nothing to encode
        return names, self.label_embeddings(names, templates)

    def info(self) -> dict:
        """Backend, device, the placements tried, precision, target, files (and the one each tower runs),
        this CPU's instruction sets and what they mean for INT8, and versions."""
        m = self.manifest
        runs = self.runtime.run_files()
        return {
            **self._report,
            **self.runtime.info(),
            "target": m.target,
            "precision": m.precision,
            "embed_dim": m.embed_dim,
            "towers": {k: {"file": t.file, "format": t.format, "precision": t.precision,
                           "inputs": self.runtime.input_shapes(k), "requires_isa": t.requires_isa,
                           **({"runs": runs[k]} if k in runs else {})} for k, t in m.towers.items()},
            "cpu": host_cpu().to_dict(),
            "files": sorted(m.files),
            "label_set": len(self.label_set.names) if self.label_set else None,
            "vledge": __version__,
            "provenance": m.provenance,
        }

    def __repr__(self) -> str:
        where = f"{self.runtime.name}:{self.runtime.device}"
        return f"EdgeModel({self._report.get('path')!s}, {where}, {self.manifest.precision})"
