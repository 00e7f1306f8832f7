"""Calibration data for static quantization: real images and varied captions, as numpy feeds per tower.

One ``CalibrationData`` serves every backend: ``data_reader`` hands it to ONNX Runtime's calibrators,
``nncf_dataset`` to NNCF. Samples are stored one per feed (batch 1, text unpadded) and re-batched on
demand, so a static-shape target gets exactly its batch size and sequence length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from vledge.errors import ConfigError

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
KINDS = ("image", "text")


@dataclass
class CalibrationData:
    """Per-sample feeds for each tower: ``image`` holds ``{"pixel_values": (1, 3, H, W)}`` float32,
    ``text`` holds ``{"input_ids", "attention_mask": (1, L)}`` int64, unpadded.
    """

    image: list[Feed] = field(default_factory=list)
    text: list[Feed] = field(default_factory=list)
    pad_id: int = 0
    source: str = ""

    @classmethod
    def from_dataset(cls, model, data, n: int = 128, seed: int = 0) -> "CalibrationData":
        """Draw ``n`` seeded random items of ``data`` (an ``ImageTextDataset``).

        Images go through ``model.preprocess``; captions are varied on purpose (each item takes a
        different prompt template, or its own caption) because calibrating on one repeated caption
        broke batch-8 text embeddings. Fewer usable items than ``n`` logs a warning and continues.
        """
        if n < 1:
            raise ConfigError(f"calibration needs at least 1 sample, got n={n}")
        if len(data) == 0:
            raise ConfigError(f"calibration data set {data.name!r} is empty; pass a data set with images")
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
        batch = data.batch(picked, model.preprocess)
        images = [{"pixel_values": batch.pixels[i : i + 1]} for i in range(len(batch.indices))]
        captions = [data.caption(int(i), variant=k) for k, i in enumerate(batch.indices)]
        texts = []
        for caption in captions:
            ids, mask = model.tokenizer(caption)
            texts.append({"input_ids": ids, "attention_mask": mask})
        if len(images) < n:
            log.warning(
                "calibration asked for %d samples but %s gave only %d; continuing with %d "
                "(static INT8 ranges may be less reliable)", n, data.name, len(images), len(images),
            )
        return cls(image=images, text=texts, pad_id=int(model.tokenizer.spec.pad_id), source=data.name)

    def __len__(self) -> int:
        return max(len(self.image), len(self.text))

    def samples(self, kind: str) -> list[Feed]:
        if kind not in KINDS:
            raise ConfigError(f"tower kind must be 'image' or 'text', got {kind!r}")
        feeds = self.image if kind == "image" else self.text
        if not feeds:
            raise ConfigError(f"calibration data holds no {kind} samples; build it with CalibrationData.from_dataset")
        return feeds

    def batches(self, kind: str, batch_size: int = 8, seq_len: int | None = None) -> list[Feed]:
        """Stack samples into batches of ``batch_size`` (the last one may be smaller unless shapes are static).

        Text is padded with ``pad_id`` to the longest caption of its batch, or to ``seq_len`` (truncated
        to it where longer) for static shapes.
        """
        if batch_size < 1:
            raise ConfigError(f"calibration batch size must be at least 1, got {batch_size}")
        feeds = self.samples(kind)
        groups = [feeds[i : i + batch_size] for i in range(0, len(feeds), batch_size)]
        if seq_len is not None and len(groups) > 1 and len(groups[-1]) < batch_size:
            groups.pop()  # static shapes cannot take a short last batch
        return [self._stack(kind, g, seq_len) for g in groups]

    def _stack(self, kind: str, group: list[Feed], seq_len: int | None) -> Feed:
        if kind == "image":
            return {"pixel_values": np.concatenate([f["pixel_values"] for f in group])}
        width = seq_len or max(f["input_ids"].shape[1] for f in group)
        ids = np.full((len(group), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.int64)
        for row, f in enumerate(group):
            n = min(width, f["input_ids"].shape[1])
            ids[row, :n] = f["input_ids"][0, :n]
            mask[row, :n] = f["attention_mask"][0, :n]
        return {"input_ids": ids, "attention_mask": mask}

    def data_reader(self, kind: str, batch_size: int = 8, seq_len: int | None = None):
        """An ONNX Runtime ``CalibrationDataReader`` over the batches of one tower."""
        from onnxruntime.quantization import CalibrationDataReader

        class _Reader(CalibrationDataReader):
            def __init__(self, feeds: list[Feed]):
                self.feeds = feeds
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

            def __len__(self):
                return len(self.feeds)

        return _Reader(self.batches(kind, batch_size, seq_len))

    def nncf_dataset(self, kind: str, batch_size: int = 1, seq_len: int | None = None):
        """An ``nncf.Dataset`` over the batches of one tower (feeds keyed by input name)."""
        import nncf

        return nncf.Dataset(self.batches(kind, batch_size, seq_len))
