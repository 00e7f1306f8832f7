"""The teacher cache's files and fingerprints: what identifies a data set, the per-image pixel checksums,
and safetensors files that carry the cache key and a sha256 of their arrays, read memory-mapped and
written by an atomic rename."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vledge.data.base import ImageTextDataset, Subset
from vledge.images import PreprocessSpec

CACHE_FORMAT = 2  # 2: vectorised pixel checksums
PROBE_VALUES = 16384  # pixel values hashed per image: all of a small image, an even sample of a large one
_DTYPES = {"F32": np.float32, "U64": np.uint64, "U8": np.uint8, "I64": np.int64}


class Unusable(Exception):
    """A cache file that must not be read: why, in words."""


@dataclass
class CacheStats:
    """What a cache served and what it had to compute."""

    image_hits: int = 0
    images_computed: int = 0
    stale_rows: int = 0  # rows stored for other pixels than the batch's, recomputed
    text_hits: int = 0
    texts_computed: int = 0
    shards_rebuilt: int = 0  # shard files that failed their checks

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        extra = f", {self.stale_rows} stale rows" if self.stale_rows else ""
        extra += f", {self.shards_rebuilt} shards rebuilt" if self.shards_rebuilt else ""
        return (f"images {self.image_hits} cached / {self.images_computed} computed, "
                f"texts {self.text_hits} cached / {self.texts_computed} computed{extra}")


def data_fingerprint(data: ImageTextDataset, spec: PreprocessSpec) -> dict:
    """What identifies a data set's images and texts as the teacher sees them."""
    fingerprint = {
        "source": data.describe(), "kind": type(data).__name__, "size": len(data),
        "classes": list(data.classes or []), "templates": list(data.templates),
        "has_captions": bool(data.has_captions), "preprocess": spec.to_dict(),
    }
    if isinstance(data, Subset):
        fingerprint["base"] = data_fingerprint(data.base, spec)
        fingerprint["indices"] = hashlib.sha256(np.ascontiguousarray(data.indices, np.int64).tobytes()).hexdigest()
    return fingerprint


def distill_texts(data: ImageTextDataset, indices) -> list[str]:
    """The texts distillation asks the teacher about: the class prompts and every caption variant."""
    prompts = [t.format(c) for c in data.classes for t in data.templates] if data.classes else []
    variants = len(data.templates) if data.classes and not data.has_captions else 1
    captions = (data.caption(int(i), v) for v in range(variants) for i in indices)
    return list(dict.fromkeys([*prompts, *captions]))


def pixel_checksums(pixels: np.ndarray) -> np.ndarray:
    """A 64-bit checksum per preprocessed image (never 0, which marks a row not computed).

    A weighted sum of the float32 bit patterns modulo 2**64, one odd weight per position: any single changed
    value changes it. Not cryptographic (it guards against changed files, not adversaries), but one integer
    matrix product for the whole batch, a quarter of the time of hashing each row with blake2b.
    """
    flat = np.ascontiguousarray(pixels, dtype=np.float32).reshape(len(pixels), -1)
    probe = flat[:, :: max(1, flat.shape[1] // PROBE_VALUES)].view(np.uint32).astype(np.uint64)
    shape = int.from_bytes(hashlib.blake2b(repr(pixels.shape[1:]).encode(), digest_size=8).digest(), "little")
    return _mix(probe @ _position_weights(probe.shape[1]) + np.uint64(shape)) | np.uint64(1)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=8)
def _position_weights(n: int) -> np.ndarray:
    return _mix(np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).data)
    return digest.hexdigest()


def read_cache_file(path: Path, key: str, verify: bool = True) -> dict[str, np.ndarray]:
    """The arrays of one safetensors cache file, memory-mapped; raises _Unusable with the reason."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if length <= 0 or 8 + length > size:
                raise Unusable(f"header of {length} bytes in a file of {size}")
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as exc:
        raise Unusable(f"unreadable header ({exc})") from None
    meta = header.pop("__metadata__", {})
    if meta.get("key") != key:
        raise Unusable("built for another teacher, data set or cache format")
    arrays = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        if 8 + length + end > size:
            raise Unusable(f"truncated: {name} needs {8 + length + end} bytes, the file has {size}")
        shape, dtype = tuple(info["shape"]), _DTYPES[info["dtype"]]
        arrays[name] = (np.memmap(path, dtype, "r", offset=8 + length + start, shape=shape)
                        if end > start else np.zeros(shape, dtype))
    if verify and _digest(arrays) != meta.get("sha256"):
        raise Unusable("contents do not match their sha256")
    return arrays


def write_cache_file(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file, flush it to disk, then rename it into place."""
    from safetensors.numpy import save_file

    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(arrays, str(tmp), metadata={"key": key, "sha256": _digest(arrays), "format": str(CACHE_FORMAT)})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
