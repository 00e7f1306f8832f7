"""Every field of a bundle manifest checked for its type and range before it becomes a ``BundleManifest``.

A manifest is data from a file, so nothing in it is trusted to be the right type: each check raises one
``BundleError`` naming the field (``towers.image.inputs[0].shape``), what it holds and what it must
hold. What only the opened towers can tell (their real inputs and outputs) is checked by
``vledge.runtimes.tower_checks``. No torch, no runtime framework.
"""

from __future__ import annotations

import math
import re

from vledge.cpu import REQUIREMENTS
from vledge.errors import BundleError

TOWER_KINDS = ("image", "text")
TOWER_FORMATS = ("onnx", "openvino")
# ``logit_scale`` multiplies every cosine before the softmax. CLIP learns it in log space and clamps it
# at 100; 1000 leaves ten times that headroom. Past it the softmax is a bare argmax, and far past it
# (1e308) the products overflow float32 into NaN probabilities.
MAX_LOGIT_SCALE = 1000.0
# Sizes past these are not models anyone deploys; they bound what a manifest can make preprocessing or
# tokenizing allocate (a 10^9-pixel image side, a 10^9-token text).
MAX_EMBED_DIM = 65536
MAX_IMAGE_SIZE = 8192
MAX_TEXT_LENGTH = 16384
TENSOR_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _fail(where: str, what: str, value) -> BundleError:
    return BundleError(f"vledge.json field {where} must be {what}, got {_show(value)}; re-run vledge compress")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(data: dict, key: str, where: str, low: int, high: int, required: bool = True):
    if key not in data and not required:
        return None
    value = _get(data, key, where)
    if not is_int(value) or not low <= value <= high:
        raise _fail(f"{where}{key}", f"a whole number from {low} to {high}", value)
    return value


def _str(data: dict, key: str, where: str, required: bool = True):
    if key not in data and not required:
        return None
    value = _get(data, key, where)
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}{key}", "a non-empty string", value)
    return value


def _dict(data: dict, key: str, where: str, required: bool = True, nullable: bool = False):
    if key not in data and not required:
        return None
    value = _get(data, key, where)
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise _fail(f"{where}{key}", "an object" + (" or null" if nullable else ""), value)
    return value


def _get(data: dict, key: str, where: str):
    if key not in data:
        raise BundleError(f"vledge.json has no field {where}{key}; it is incomplete: re-run vledge compress")
    return data[key]


def check_manifest(data: dict) -> None:
    """Raise ``BundleError`` on the first manifest field of the wrong type or out of range."""
    _str(data, "target", "")
    _str(data, "precision", "")
    embed_dim = _int(data, "embed_dim", "", 1, MAX_EMBED_DIM)
    scale = _get(data, "logit_scale", "")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) \
            or not 0 < scale <= MAX_LOGIT_SCALE:
        raise BundleError(
            f"vledge.json field logit_scale must be a finite number above 0 and at most {MAX_LOGIT_SCALE:g}, got "
            f"{_show(scale)}: it multiplies every cosine before the softmax (a negative one inverts every ranking, "
            "CLIP clamps it at 100); re-run vledge compress"
        )
    image_size = _check_preprocess(_dict(data, "preprocess", ""))
    max_length = _check_tokenizer(_dict(data, "tokenizer", ""))
    towers = _dict(data, "towers", "")
    if not towers:
        raise _fail("towers", "an object with an 'image' and/or a 'text' tower", towers)
    for kind, tower in towers.items():
        if kind not in TOWER_KINDS:
            raise BundleError(
                f"vledge.json names a tower of unknown kind {kind!r:.60}: a bundle holds an 'image' and/or a 'text' "
                "tower; upgrade vledge if this bundle is newer"
            )
        _check_tower(kind, tower, embed_dim, image_size, max_length)
    labels = _dict(data, "labels", "", required=False, nullable=True)
    if labels is not None:
        _str(labels, "file", "labels.")
        _str(labels, "embeddings", "labels.")
    for key in ("config", "metrics", "provenance"):
        _dict(data, key, "", required=False)
    files = _dict(data, "files", "")
    for path, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _fail(f"files[{path!r:.60}]", "a sha256 as 64 lower-case hex digits", digest)


def _check_preprocess(pre: dict) -> int:
    size = _int(pre, "image_size", "preprocess.", 1, MAX_IMAGE_SIZE)
    if pre.get("resize_to") is not None:
        _int(pre, "resize_to", "preprocess.", 1, MAX_IMAGE_SIZE)
    if "interpolation" in pre:
        _str(pre, "interpolation", "preprocess.")
    for key in ("mean", "std"):
        values = pre.get(key, [1.0, 1.0, 1.0])
        if not isinstance(values, list) or len(values) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise _fail(f"preprocess.{key}", "a list of three finite numbers", values)
        if key == "std" and min(values) <= 0:
            raise _fail("preprocess.std", "three numbers above 0", values)
    return size


def _check_tokenizer(tok: dict) -> int:
    _str(tok, "kind", "tokenizer.")
    max_length = _int(tok, "max_length", "tokenizer.", 1, MAX_TEXT_LENGTH)
    _int(tok, "pad_id", "tokenizer.", 0, 2**31 - 1)
    _str(tok, "file", "tokenizer.", required=False)
    return max_length


def _check_tower(kind: str, tower, embed_dim: int, image_size: int, max_length: int) -> None:
    where = f"towers.{kind}."
    if not isinstance(tower, dict):
        raise _fail(where[:-1], "an object", tower)
    _str(tower, "file", where)
    fmt = _str(tower, "format", where)
    if fmt not in TOWER_FORMATS:
        raise BundleError(
            f"vledge.json field {where}format is {fmt!r:.60}, a format this vledge cannot run "
            f"(it runs: {', '.join(TOWER_FORMATS)}); upgrade vledge or re-run vledge compress"
        )
    _str(tower, "precision", where)
    inputs = [_check_tensor(t, f"{where}inputs[{i}]") for i, t in enumerate(_list(tower, "inputs", where))]
    outputs = [_check_tensor(t, f"{where}outputs[{i}]") for i, t in enumerate(_list(tower, "outputs", where))]
    names = [t["name"] for t in inputs]
    if len(set(names)) != len(names):
        raise _fail(f"{where}inputs", "tensors of distinct names", names)
    if kind == "image":
        _check_image_input(inputs, where, image_size)
    else:
        _check_text_inputs(inputs, where, max_length)
    batches = {t["shape"][0] for t in inputs if is_int(t["shape"][0])}
    if len(batches) > 1:
        raise _fail(f"{where}inputs", "tensors of one static batch size", sorted(batches))
    out = outputs[0]
    if not out["dtype"].startswith("float") or len(out["shape"]) != 2:
        raise _fail(f"{where}outputs[0]", "a 2-D float tensor (batch, embed_dim)", out)
    if is_int(out["shape"][1]) and out["shape"][1] != embed_dim:
        raise BundleError(
            f"vledge.json says the {kind} tower outputs {out['shape'][1]} values per input but embed_dim is "
            f"{embed_dim}; re-run vledge compress"
        )
    _dict(tower, "quantization", where, required=False)
    _check_isa(tower, where)


def _list(data: dict, key: str, where: str) -> list:
    value = _get(data, key, where)
    if not isinstance(value, list) or not value:
        raise _fail(f"{where}{key}", "a non-empty list", value)
    return value


def _check_tensor(tensor, where: str) -> dict:
    if not isinstance(tensor, dict):
        raise _fail(where, "an object with name, dtype and shape", tensor)
    _str(tensor, "name", f"{where}.")
    dtype = _str(tensor, "dtype", f"{where}.")
    if dtype not in TENSOR_DTYPES:
        raise _fail(f"{where}.dtype", f"one of {', '.join(TENSOR_DTYPES)}", dtype)
    shape = _get(tensor, "shape", f"{where}.")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
            (is_int(d) and d >= 1) or (isinstance(d, str) and d) for d in shape):
        raise _fail(f"{where}.shape", "a list of 1 to 8 axes, each a size of at least 1 or a name for a dynamic "
                                      "axis (a static batch of 0 or less cannot run)", shape)
    return tensor


def _check_image_input(inputs: list[dict], where: str, image_size: int) -> None:
    if len(inputs) != 1:
        raise _fail(f"{where}inputs", "one tensor (the pixels)", [t["name"] for t in inputs])
    pixels = inputs[0]
    shape = pixels["shape"]
    if not pixels["dtype"].startswith("float") or len(shape) != 4:
        raise _fail(f"{where}inputs[0]", "a 4-D float tensor (batch, 3, height, width)", pixels)
    if is_int(shape[1]) and shape[1] != 3:
        raise _fail(f"{where}inputs[0].shape[1]", "3 (RGB channels)", shape[1])
    for axis in (2, 3):
        if is_int(shape[axis]) and shape[axis] != image_size:
            raise BundleError(
                f"the image tower takes {shape[2]} x {shape[3]} pixels but vledge.json preprocesses images to "
                f"{image_size} x {image_size} (preprocess.image_size); re-run vledge compress"
            )


def _check_text_inputs(inputs: list[dict], where: str, max_length: int) -> None:
    if len(inputs) != 2 or not all(t["dtype"].startswith(("int", "uint")) and len(t["shape"]) == 2 for t in inputs):
        raise _fail(f"{where}inputs", "two 2-D integer tensors (token ids, attention mask)",
                    [(t["name"], t["dtype"], t["shape"]) for t in inputs])
    for t in inputs:
        if is_int(t["shape"][1]) and t["shape"][1] != max_length:
            raise BundleError(
                f"the text tower takes {t['shape'][1]} tokens ({t['name']}) but the tokenizer's max_length in "
                f"vledge.json is {max_length}; re-run vledge compress"
            )


def _check_isa(tower: dict, where: str) -> None:
    requires = tower.get("requires_isa", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise _fail(f"{where}requires_isa", "a list of strings", requires)
    unknown = [r for r in requires if r not in REQUIREMENTS]
    if unknown:
        raise BundleError(
            f"vledge.json field {where}requires_isa names {unknown[0]!r:.60}, a CPU requirement unknown to this "
            f"vledge (knows: {', '.join(REQUIREMENTS)}); upgrade vledge"
        )
    fallback = _dict(tower, "fallback", where, required=False, nullable=True)
    if fallback is None:
        return
    if "file" in fallback:
        _str(fallback, "file", f"{where}fallback.")
        if fallback["file"] == tower["file"]:
            raise _fail(f"{where}fallback.file", "a file other than the tower's own", fallback["file"])
    if "float_qdq" in fallback and not isinstance(fallback["float_qdq"], bool):
        raise _fail(f"{where}fallback.float_qdq", "true or false", fallback["float_qdq"])
    if "file" not in fallback and not fallback.get("float_qdq"):
        raise _fail(f"{where}fallback", "an object naming a file or float_qdq: true", fallback)
    if "reason" in fallback and not isinstance(fallback["reason"], str):
        raise _fail(f"{where}fallback.reason", "a string", fallback["reason"])
