"""A bundle's compiled label set (``labels.json`` + ``label_embeddings.npy``), read from bytes and checked.

Names, templates and embeddings all come from files, so each is checked before it is used: the ``.npy``
header against the file's size before anything is allocated, float dtypes only, finite values of unit
norm, one row per distinct name. No torch, no runtime framework.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from vledge.errors import BundleError, ConfigError
from vledge.text import check_template, check_text

# Rows must have L2 norm 1 within this: the writer normalises in float32 (error ~1e-7), and a float16
# copy stays within 5e-4 of 1; anything further is an unnormalised or damaged row.
UNIT_NORM_TOLERANCE = 1e-3
_NPY_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class LabelSet:
    """Class names, with precomputed embeddings (a bundle's compiled set) and/or the prompt templates."""

    names: list[str]
    embeddings: np.ndarray | None = None
    templates: list[str] | None = None


def parse_label_record(record, where: str) -> tuple[list[str], list[str] | None]:
    """The names and templates of a parsed ``labels.json``."""
    if not isinstance(record, dict):
        raise BundleError(f"{where} must hold a JSON object with a list of names; re-run vledge compress")
    names = record.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BundleError(f"{where} must list label names as non-empty strings; re-run vledge compress")
    if not names:
        raise BundleError(f"{where} lists no label names; a compiled label set needs at least one")
    seen = set()
    for name in names:
        if name in seen:
            raise BundleError(f"{where} names {name!r:.80} more than once; each label must appear once")
        seen.add(name)
    templates = record.get("templates")
    if templates is not None:
        if not isinstance(templates, list) or not templates:
            raise BundleError(f"{where} templates must be a non-empty list of strings, e.g. ['a photo of a {{}}.']")
    try:
        for name in names:
            check_text(name, "a label name")
        for template in templates or []:
            check_template(template)
    except ConfigError as exc:
        raise BundleError(f"{where}: {exc}") from None
    return names, templates


def parse_embeddings(data: bytes, where: str, names: list[str], embed_dim: int, names_file: str) -> np.ndarray:
    """The ``(len(names), embed_dim)`` float32 rows of a ``.npy`` file's bytes, checked before they are trusted."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
    except ValueError:
        what = "a .npz archive" if data[:4] == b"PK\x03\x04" else "not a .npy file"
        raise BundleError(f"{where} is {what}; label embeddings are one .npy array: re-run vledge compress") from None
    if version not in _NPY_READERS:
        raise BundleError(f"{where} is a .npy file of format version {version}; vledge reads versions 1.0 and 2.0")
    try:
        shape, fortran, dtype = _NPY_READERS[version](buf)
    except Exception as exc:  # numpy parses the header with ast.literal_eval, and tokenize for old headers
        raise BundleError(f"{where} has an unreadable .npy header ({exc})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind != "f":
        raise BundleError(f"{where} holds {dtype} values; label embeddings must be floats "
                          "(float16, float32 or float64): re-run vledge compress")
    if any(d < 0 for d in shape):
        raise BundleError(f"{where}'s header claims a negative size {shape}: it is forged; re-run vledge compress")
    claimed = math.prod(shape) * dtype.itemsize  # Python integers: a header claiming 10^11 rows cannot overflow
    held = len(data) - buf.tell()
    if claimed != held:
        raise BundleError(
            f"{where}'s header claims an array of shape {shape} ({claimed} bytes) but the file holds {held} bytes "
            "after it: it is truncated or forged; re-run vledge compress"
        )
    if shape != (len(names), embed_dim):
        raise BundleError(
            f"{where} has shape {shape}, but {names_file} names {len(names)} labels of dimension {embed_dim}; "
            "re-run vledge compress"
        )
    rows = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=buf.tell())
    rows = rows.reshape(shape, order="F" if fortran else "C").astype(np.float64)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise BundleError(f"{where} row {bad} ({names[bad]!r:.80}) holds NaN or infinite values; re-run vledge compress")
    with np.errstate(over="ignore"):  # a huge row's norm overflows to inf, which the check below refuses
        norms = np.sqrt((rows * rows).sum(axis=1))
    off = np.abs(norms - 1) > UNIT_NORM_TOLERANCE
    if off.any():
        bad = int(np.flatnonzero(off)[0])
        raise BundleError(
            f"{where} row {bad} ({names[bad]!r:.80}) has norm {norms[bad]:.6g}; label embeddings must be "
            f"L2-normalised (norm 1 within {UNIT_NORM_TOLERANCE:g}): re-run vledge compress"
        )
    return np.ascontiguousarray(rows, dtype=np.float32)
