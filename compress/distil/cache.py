"""The frozen teacher's outputs on disk: its normalised embedding of every image and of every distinct text,
computed once and reused across epochs, stages (distillation, recovery after pruning) and runs: the idea
behind MobileCLIP's reinforced data set.

One folder per (teacher, data set) under the cache directory, named by the teacher's weight hash
(:func:`vledge.models.identity.model_fingerprint`) and a fingerprint of the data (source and split, size,
classes and templates, a subset's indices, the preprocessing). Inside:

- ``images-00000.safetensors``, ...: one shard per ``shard_rows`` consecutive data indices, holding the
  embeddings (rows, D) float32 and, per row, a checksum of the preprocessed pixels it was computed from
  (0: not computed yet);
- ``texts.safetensors``: the distinct texts (UTF-8) and their embeddings;
- ``cache.json``: what the folder was built from, for people.

Every file carries the cache key and a sha256 of its arrays in its header, and lands by writing a temporary
file and renaming it, so an interrupted build leaves no half shard. A shard that fails its checks
(truncated, corrupt, another teacher's) is rebuilt; a row whose pixel checksum differs from the batch's
(the images changed under the same name) is recomputed: nothing stale is served.

Distillation applies no pixel augmentation (``variant`` only rotates the caption templates), so one
embedding per image serves every epoch.

Under torchrun, :meth:`TeacherCache.build` splits the shards over the ranks; each rank writes only the
shards it owns (shard number modulo world size) and rank 0 the texts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from vledge.compress.distil.cache_files import (
    CACHE_FORMAT,
    CacheStats,
    Unusable,
    data_fingerprint,
    distill_texts,
    pixel_checksums,
    read_cache_file,
    write_cache_file,
)
from vledge.data.base import Batch, ImageTextDataset
from vledge.images import PreprocessSpec
from vledge.progress import progress_bar
from vledge.train import distributed

log = logging.getLogger(__name__)

SHARD_ROWS = 4096
MAX_DIRTY_SHARDS = 8  # filled lazily, shards are written once this many wait in memory


@contextlib.contextmanager
def _inference(model):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class _Shard:
    def __init__(self, embeddings: np.ndarray, checksums: np.ndarray):
        self.embeddings, self.checksums, self.dirty = embeddings, checksums, False

    def writable(self) -> "_Shard":
        if not self.dirty:  # copy out of the read-only memory map
            self.embeddings, self.checksums, self.dirty = np.array(self.embeddings), np.array(self.checksums), True
        return self


class TeacherCache:
    """The teacher's embeddings of ``data`` (preprocessed with ``spec``) and of texts, kept in ``cache_dir``.

    Pass it as ``distill(..., teacher_forward=cache)``: it serves what it holds, runs the teacher on what
    it lacks and stores that too. :meth:`build` fills it ahead (all ranks together under torchrun);
    :meth:`flush` (or leaving a ``with`` block) writes what is still in memory.
    """

    def __init__(self, cache_dir: str | os.PathLike, teacher, data: ImageTextDataset, *,
                 spec: PreprocessSpec | None = None, teacher_id: str | None = None,
                 shard_rows: int = SHARD_ROWS, batch_size: int = 256):
        from vledge.models.identity import model_fingerprint

        self.teacher, self.data = teacher, data
        self.spec = spec or teacher.preprocess
        self.shard_rows, self.batch_size = shard_rows, batch_size
        self.embed_dim = int(teacher.embed_dim)
        teacher_id = teacher_id or model_fingerprint(teacher)
        description = {"format": CACHE_FORMAT, "teacher_sha256": teacher_id, "embed_dim": self.embed_dim,
                       "shard_rows": shard_rows, "data": data_fingerprint(data, self.spec)}
        self.key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        self.folder = Path(cache_dir) / f"{teacher_id[:12]}-{self.key[:12]}"
        self.stats = CacheStats()
        self._shards: dict[int, _Shard] = {}
        self._text_rows: dict[str, int] | None = None
        self._text_stored = np.zeros((0, self.embed_dim), np.float32)
        self._text_new: list[np.ndarray] = []
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "cache.json").is_file():
            tmp = self.folder / f".cache.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(description, indent=2) + "\n")
            os.replace(tmp, self.folder / "cache.json")

    # --- the TeacherForward interface

    def __call__(self, batch: Batch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's embeddings of ``batch``'s images and of ``texts``, as :class:`~vledge.compress.distil.teacher.TeacherOutputs` gives."""
        return torch.from_numpy(self.images(batch)), self.encode_texts(texts)

    def images(self, batch: Batch) -> np.ndarray:
        """(len(batch.indices), D) embeddings of the batch's images, computing and storing those not held."""
        out = np.empty((len(batch.indices), self.embed_dim), np.float32)
        if not len(out):
            return out
        sums = pixel_checksums(batch.pixels)
        shard_of = batch.indices // self.shard_rows
        missing, stale = [], 0
        for number in np.unique(shard_of):
            where = np.nonzero(shard_of == number)[0]
            shard, rows = self._shard(int(number)), batch.indices[where] % self.shard_rows
            stored = shard.checksums[rows]
            hit = stored == sums[where]
            out[where[hit]] = shard.embeddings[rows[hit]]
            missing.extend(where[~hit])
            stale += int(((stored != 0) & ~hit).sum())
        self.stats.image_hits += len(out) - len(missing)
        if stale:
            self.stats.stale_rows += stale
            log.warning("teacher cache %s: %d rows were computed from other pixels than now: recomputing them",
                        self.folder, stale)
        if missing:
            missing = np.array(sorted(missing))
            with _inference(self.teacher):
                pixels = torch.from_numpy(batch.pixels[missing]).to(self.teacher.device())
                out[missing] = self.teacher.encode_image(pixels).float().cpu().numpy()
            self.stats.images_computed += len(missing)
            self._store(batch.indices[missing], sums[missing], out[missing])
        return out

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) embeddings of ``texts``, computing and keeping those not held."""
        rows = self._texts()
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            with _inference(self.teacher):
                for i in range(0, len(missing), self.batch_size):
                    chunk = missing[i : i + self.batch_size]
                    embeds = self.teacher.encode_text(*self.teacher.tokenize(chunk)).float().cpu().numpy()
                    for text, vector in zip(chunk, embeds):
                        rows[text] = len(self._text_stored) + len(self._text_new)
                        self._text_new.append(vector)
            self.stats.texts_computed += len(missing)
        self.stats.text_hits += len(texts) - len(missing)
        stored = len(self._text_stored)
        vectors = [self._text_stored[r] if r < stored else self._text_new[r - stored] for r in (rows[t] for t in texts)]
        return torch.from_numpy(np.stack(vectors)) if vectors else torch.zeros((0, self.embed_dim))

    # --- filling and writing

    def build(self, indices=None, *, texts: list[str] | None = None) -> CacheStats:
        """Compute what the cache lacks for ``indices`` (default: every item) and ``texts`` (default: the
        prompts and captions distillation asks for), and write it. Under torchrun every rank must call it."""
        started, before = time.perf_counter(), CacheStats(**self.stats.to_dict())
        indices = np.unique(np.arange(len(self.data)) if indices is None else np.asarray(indices, np.int64))
        shard_of = indices // self.shard_rows
        mine = [int(k) for k in np.unique(shard_of) if self._owned(int(k))]
        todo = []
        for number in mine:
            rows = indices[shard_of == number]
            todo.append((number, rows[self._shard(number).checksums[rows % self.shard_rows] == 0]))
        chunks = [(n, rows[i : i + self.batch_size]) for n, rows in todo for i in range(0, len(rows), self.batch_size)]
        for i, (number, chunk) in enumerate(progress_bar(chunks, desc="teacher cache", enabled=distributed.is_main())):
            self.images(self.data.batch(chunk, self.spec))
            if i + 1 == len(chunks) or chunks[i + 1][0] != number:
                self._flush_shard(number)
        if distributed.is_main():
            self.encode_texts(texts if texts is not None else distill_texts(self.data, indices))
            self._flush_texts()
        distributed.barrier()
        if distributed.is_distributed():  # read what the other ranks wrote
            self._shards, self._text_rows = {}, None
        done = CacheStats(**{k: v - getattr(before, k) for k, v in self.stats.to_dict().items()})
        log.info("teacher cache %s: %d images, %s in %.1f s", self.folder, len(indices), done.summary(),
                 time.perf_counter() - started)
        return done

    def flush(self) -> None:
        """Write every shard (this rank owns) and the texts that wait in memory."""
        for number, shard in list(self._shards.items()):
            if shard.dirty and self._owned(number):
                self._flush_shard(number)
        if distributed.is_main():
            self._flush_texts()

    def close(self) -> None:
        self.flush()
        log.info("teacher cache %s: %s", self.folder, self.stats.summary())

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- shards

    def _owned(self, number: int) -> bool:
        return number % distributed.world_size() == distributed.rank()

    def _path(self, number: int) -> Path:
        return self.folder / f"images-{number:05d}.safetensors"

    def _shard(self, number: int) -> _Shard:
        if number not in self._shards:
            self._shards[number] = self._load_shard(number)
        return self._shards[number]

    def _load_shard(self, number: int, verify: bool = True) -> _Shard:
        path = self._path(number)
        if path.is_file():
            try:
                arrays = read_cache_file(path, self.key, verify)
                embeddings, checksums = arrays["embeddings"], arrays["checksums"]
                if embeddings.shape != (self.shard_rows, self.embed_dim) or checksums.shape != (self.shard_rows,):
                    raise Unusable(f"arrays of shape {embeddings.shape} and {checksums.shape}")
                return _Shard(embeddings, checksums)
            except (Unusable, KeyError) as exc:
                self.stats.shards_rebuilt += 1
                log.warning("teacher cache: %s is unusable (%s): rebuilding it", path, exc)
        return _Shard(np.zeros((self.shard_rows, self.embed_dim), np.float32), np.zeros(self.shard_rows, np.uint64))

    def _store(self, indices: np.ndarray, sums: np.ndarray, embeds: np.ndarray) -> None:
        shard_of = indices // self.shard_rows
        for number in np.unique(shard_of):
            where = shard_of == number
            shard = self._shard(int(number)).writable()
            shard.embeddings[indices[where] % self.shard_rows] = embeds[where]
            shard.checksums[indices[where] % self.shard_rows] = sums[where]
        waiting = [n for n, s in self._shards.items() if s.dirty and self._owned(n)]
        if len(waiting) > MAX_DIRTY_SHARDS:
            for number in waiting:
                self._flush_shard(number)

    def _flush_shard(self, number: int) -> None:
        shard = self._shards.get(number)
        if shard is None or not shard.dirty:
            return
        write_cache_file(self._path(number), self.key, {"embeddings": shard.embeddings, "checksums": shard.checksums})
        self._shards[number] = self._load_shard(number, verify=False)  # back to a memory map

    # --- texts

    def _texts(self) -> dict[str, int]:
        if self._text_rows is None:
            self._text_rows, self._text_new = {}, []
            self._text_stored = np.zeros((0, self.embed_dim), np.float32)
            path = self.folder / "texts.safetensors"
            if path.is_file():
                try:
                    arrays = read_cache_file(path, self.key)
                    blob, offsets = bytes(arrays["utf8"]), arrays["offsets"]
                    texts = [blob[offsets[i] : offsets[i + 1]].decode() for i in range(len(offsets) - 1)]
                    if arrays["embeddings"].shape != (len(texts), self.embed_dim):
                        raise Unusable(f"{len(texts)} texts but embeddings of shape {arrays['embeddings'].shape}")
                    self._text_stored = arrays["embeddings"]
                    self._text_rows = {t: i for i, t in enumerate(texts)}
                except (Unusable, KeyError, UnicodeDecodeError) as exc:
                    self.stats.shards_rebuilt += 1
                    log.warning("teacher cache: %s is unusable (%s): rebuilding it", path, exc)
        return self._text_rows

    def _flush_texts(self) -> None:
        if not self._text_new:
            return
        texts = sorted(self._text_rows, key=self._text_rows.get)
        encoded = [t.encode() for t in texts]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        arrays = {
            "embeddings": np.concatenate([np.asarray(self._text_stored), np.stack(self._text_new)]),
            "utf8": np.frombuffer(b"".join(encoded), np.uint8), "offsets": offsets,
        }
        write_cache_file(self.folder / "texts.safetensors", self.key, arrays)
        self._text_rows = None
        self._texts()
