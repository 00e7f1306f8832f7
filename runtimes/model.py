"""EdgeModel: what ``vledge.load`` returns. Preprocessing, batching, normalisation and zero-shot
classification in numpy, over whichever runtime backend was chosen."""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Mapping
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from vledge.version import __version__
from vledge.cpu import host_cpu
from vledge import opencv_frames
from vledge.errors import ConfigError
from vledge.images import ImageInput, as_rgb, check_channels, is_one_image, iter_images, preprocess
from vledge.label_set import LabelSet
from vledge.prediction import Prediction
from vledge.runtimes.base import Runtime
from vledge.runtimes.towers import TowerRuntimes, tower_placement
from vledge.text import TextTokenizer, as_text_list, check_text, fill_templates

log = logging.getLogger(__name__)

DEFAULT_BATCH = 32  # chunk size for dynamic-batch towers: keeps memory flat on long inputs
_CACHE_SIZE = 8  # label lists whose text embeddings are kept


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-12)


def count(value, name: str) -> int:
    """``value`` as a whole number of at least 1 (a ``top_k``, a ``batch_size``), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {type(value).__name__} {value!r:.40}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return int(value)


def _chunks(items: Iterator, step: int) -> Iterator[list]:
    while chunk := list(islice(items, step)):
        yield chunk


def _string_list(values, what: str, example: str) -> list | None:
    """Labels or templates as given (any iterable but a lone string, bytes or a mapping) as a list; items unchecked."""
    if values is None:
        return None
    if isinstance(values, (str, bytes, bytearray, Mapping)):
        raise ConfigError(f"{what} must be a list of strings, e.g. {example}")
    try:
        return list(values)
    except TypeError:
        raise ConfigError(f"{what} must be a list of strings, e.g. {example}; got {type(values).__name__}") from None


def _int_matrix(value, name: str, allow_bool: bool = False) -> np.ndarray:
    """``value`` as a non-empty (n, length) integer array (one row for a 1-D one), else a ConfigError."""
    kinds = "iub" if allow_bool else "iu"
    try:
        array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    except ValueError:  # rows of different lengths
        array = None
    if array is None or array.dtype.kind not in kinds or array.ndim not in (1, 2) or array.size == 0:
        got = f"{array.dtype} array of shape {array.shape}" if array is not None else type(value).__name__
        raise ConfigError(f"{name} must be a non-empty integer array of shape (n, length) (what the tokenizer "
                          f"gives: ids, attention_mask = model.tokenizer(texts)), got {got}")
    return array.reshape(1, -1) if array.ndim == 1 else array


class EdgeModel:
    """A loaded dual encoder: ``encode_image``, ``encode_text``, ``classify``, ``info``.

    What ``vledge.load`` returns. Safe to share between threads. Embeddings are L2-normalised float32
    arrays of shape (n, dim). Array images are read as RGB unless ``channels="bgr"`` says they come from
    OpenCV; files, encoded bytes and PIL images carry their own channel order.
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
        """The size of every embedding (the shared space both towers project into)."""
        return self.manifest.embed_dim

    @property
    def logit_scale(self) -> float:
        """The temperature ``classify`` multiplies cosines by before its softmax."""
        return self.manifest.logit_scale

    def _static_batch(self, kind: str) -> int | None:
        first = next(iter(self.runtime.input_shapes(kind).values()))
        return first[0] if first and isinstance(first[0], int) else None

    def encode_image(self, images: ImageInput | Iterable[ImageInput], batch_size: int = DEFAULT_BATCH, *,
                     channels: str = "rgb") -> np.ndarray:
        """Embed images: paths, PIL images, HWC/HW uint8 arrays or encoded image bytes (PNG, JPEG, ... as
        ``bytes`` or a binary stream); one, a list, an NHWC array or any iterable (a generator of frames).
        Returns one row per image, even for one image.

        ``channels`` is the channel order of array images: ``"rgb"`` (the default) or ``"bgr"`` (OpenCV's
        ``cv2.imread`` and ``VideoCapture`` frames, BGRA too); other inputs are decoded as RGB either way.
        Images are decoded and embedded chunk by chunk: memory stays flat however many are given."""
        self.runtime.check_kind("image")
        channels = check_channels(channels)
        step = self._batch.get("image") or count(batch_size, "batch_size")
        spec = self.manifest.preprocess
        if isinstance(images, np.ndarray) and images.ndim <= 3:  # one frame, as a camera loop sends: no chunking
            return self._embed("image", ([preprocess(as_rgb(images, channels), spec)],))
        frames = (as_rgb(image, channels) for image in iter_images(images))
        return self._embed("image", ([preprocess(chunk, spec)] for chunk in _chunks(frames, step)))

    def encode_pixels(self, pixels: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Embed an already preprocessed float32 NCHW batch (what ``vledge.images.preprocess`` returns)."""
        self.runtime.check_kind("image")
        size = self.manifest.preprocess.image_size
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 4 or len(pixels) == 0 \
                or pixels.shape[1:] != (3, size, size) or pixels.dtype.kind not in "fiu":
            got = f"shape {pixels.shape} {pixels.dtype}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
            raise ConfigError(f"expected a non-empty float32 batch of pixels of shape (n, 3, {size}, {size}) (what "
                              f"vledge.images.preprocess returns), got {got}")
        step = self._batch.get("image") or count(batch_size, "batch_size")
        return self._embed("image", ([pixels[i : i + step]] for i in range(0, len(pixels), step)))

    def encode_text(self, texts: str | Iterable[str] | None = None, batch_size: int = DEFAULT_BATCH, *,
                    input_ids: np.ndarray | None = None, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Embed texts (one string, or a list or other iterable of them), or token ids already made.

        Texts longer than the tokenizer's max length are truncated (and cut before tokenizing, so a huge
        text costs no more than a long one). Instead of texts, ``input_ids`` takes an (n, length) integer
        array of this bundle's token ids (``model.tokenizer(texts)`` makes them), at most the tokenizer's
        ``max_length`` long, with an optional ``attention_mask`` of the same shape (1: a token, 0: padding;
        default: every position is a token, as in Hugging Face, so pass it for padded rows). Returns one
        row per text or row of ids."""
        self.runtime.check_kind("text")
        step = self._batch.get("text") or count(batch_size, "batch_size")
        if input_ids is not None or attention_mask is not None:
            if texts is not None:
                raise ConfigError("pass texts or input_ids to encode_text, not both")
            ids, mask = self._token_arrays(input_ids, attention_mask)
            return self._embed("text", ([ids[i : i + step], mask[i : i + step]] for i in range(0, len(ids), step)))
        if texts is None:
            raise ConfigError("texts must be a string or a list of strings, got NoneType; e.g. "
                              "model.encode_text(['a photo of a cat']), or pass input_ids=")
        texts = as_text_list(texts)
        return self._embed("text", (list(self.tokenizer(texts[i : i + step], pad_to_max=self._static_seq))
                                    for i in range(0, len(texts), step)))

    def _token_arrays(self, input_ids, attention_mask) -> tuple[np.ndarray, np.ndarray]:
        """Checked int64 ids and mask, padded to ``max_length`` for a static-length text tower."""
        if input_ids is None:
            raise ConfigError("attention_mask was given without input_ids; pass both")
        ids = _int_matrix(input_ids, "input_ids").astype(np.int64)
        mask = (np.ones_like(ids) if attention_mask is None
                else _int_matrix(attention_mask, "attention_mask", allow_bool=True).astype(np.int64))
        if mask.shape != ids.shape:
            raise ConfigError(f"attention_mask has shape {mask.shape}, input_ids {ids.shape}; they must match")
        if not np.isin(mask, (0, 1)).all():
            raise ConfigError("attention_mask must hold only 0 (padding) and 1 (a token)")
        spec = self.tokenizer.spec
        vocab = self.tokenizer.backend.get_vocab_size(with_added_tokens=True)
        if ids.shape[1] > spec.max_length:
            raise ConfigError(f"input_ids rows are {ids.shape[1]} tokens long; this bundle's text tower takes at "
                              f"most {spec.max_length}: truncate them")
        if ids.min() < 0 or ids.max() >= vocab:
            raise ConfigError(f"input_ids must be token ids of this bundle's tokenizer, 0 to {vocab - 1}; got "
                              f"{ids.min()} to {ids.max()} (were they made by another tokenizer?)")
        if self._static_seq and ids.shape[1] < spec.max_length:
            pad = ((0, 0), (0, spec.max_length - ids.shape[1]))
            ids, mask = np.pad(ids, pad, constant_values=spec.pad_id), np.pad(mask, pad)
        return ids, mask

    def _embed(self, kind: str, chunks: Iterable[list[np.ndarray]]) -> np.ndarray:
        """The normalised embeddings of ``chunks`` (each the tower's inputs for one batch), run one at a time."""
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
        if not out:
            raise ConfigError(f"no {kind}s given")
        return l2_normalise(out[0] if len(out) == 1 else np.concatenate(out))

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """One normalised embedding per label: the mean over prompt templates (``"{}"``: the label as is)."""
        prompts = fill_templates(labels, templates or ["{}"])  # validates the templates
        per_prompt = self.encode_text(prompts).reshape(len(labels), len(prompts) // len(labels), -1)
        return l2_normalise(per_prompt.mean(axis=1))

    def classify(
        self,
        images: ImageInput | Iterable[ImageInput],
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        templates: Sequence[str] | None = None,
        *,
        channels: str = "rgb",
    ) -> Prediction | list[Prediction]:
        """Zero-shot classification: one image in, one :class:`~vledge.Prediction` out; a list, an NHWC
        array or another iterable of images in, a list of them out (one per image, in order).

        A prediction has ``.label`` and ``.score`` (the best label and its probability) and ``.top``, the
        ``top_k`` (label, probability) pairs, best first. Probabilities are a softmax over ``logit_scale *
        cosine`` against every label. Without ``labels`` the bundle's compiled label set is used. Labels
        are turned into prompts with ``templates`` (default: the templates the compiled label set was made
        with, else the label text as is); duplicate labels are dropped with a warning, keeping the first.
        The label embeddings of the last few label lists are cached, so a stream of frames encodes them
        once. ``channels``: ``"rgb"`` (default) or ``"bgr"`` for OpenCV frames (see ``encode_image``).
        """
        top_k = count(top_k, "top_k")
        one = is_one_image(images)
        names, weights = self._label_weights(labels, templates)
        logits = self.encode_image(images, channels=channels) @ weights
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits, out=logits)
        probs /= probs.sum(axis=1, keepdims=True)
        top_k = min(top_k, len(names))
        # argmax gives the first of tied labels, as the stable sort does, in a fraction of its time.
        order = probs.argmax(axis=1)[:, None] if top_k == 1 else (-probs).argsort(axis=1, kind="stable")[:, :top_k]
        predictions = [Prediction.from_ranked([(names[j], row[j]) for j in idx])
                       for row, idx in zip(probs.tolist(), order.tolist())]
        return predictions[0] if one else predictions

    def _label_weights(self, labels, templates) -> tuple[list[str], np.ndarray]:
        # Listed once: a generator of labels is read here, not consumed by the cache key.
        labels = _string_list(labels, "labels", "['cat', 'dog']")
        templates = _string_list(templates, "prompt templates", "['a photo of a {}.']")
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
        if not all(isinstance(label, str) for label in labels):
            raise ConfigError("labels must be a list of strings, e.g. ['cat', 'dog']")
        for label in labels:
            check_text(label, "a label")
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
        this CPU's instruction sets and what they mean for INT8, the compiled label set (its names and
        templates), what reduces camera-sized frames (``"opencv"`` where installed, else ``"pillow"``) and
        versions."""
        m = self.manifest
        runs = self.runtime.run_files()
        return {
            **self._report,
            **self.runtime.info(),
            "target": m.target,
            "precision": m.precision,
            "embed_dim": m.embed_dim,
            "towers": {k: {**tower_placement(self.runtime, k), "file": t.file, "format": t.format,
                           "precision": t.precision, "inputs": self.runtime.input_shapes(k),
                           "requires_isa": t.requires_isa,
                           **({"runs": runs[k]} if k in runs else {})} for k, t in m.towers.items()},
            "cpu": host_cpu().to_dict(),
            "files": sorted(m.files),
            "label_set": self._label_set_info(),
            "frame_resizer": "opencv" if opencv_frames.available() else "pillow",
            "vledge": __version__,
            "provenance": m.provenance,
        }

    def _label_set_info(self) -> dict | None:
        compiled = self.label_set
        if compiled is None:
            return None
        return {"names": list(compiled.names), "count": len(compiled.names), "templates": list(compiled.templates),
                "embedded": compiled.embeddings is not None}

    def __repr__(self) -> str:
        split = isinstance(self.runtime, TowerRuntimes)
        where = self._report.get("placement") if split else f"{self.runtime.name}:{self.runtime.device}"
        return f"EdgeModel({self._report.get('path')!s}, {where}, {self.manifest.precision})"
