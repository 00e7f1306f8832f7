"""vledge's own checkpoint folder: config.json, model.safetensors, tokenizer.json, preprocessor_config.json.

No pickle: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

from vledge.errors import CheckpointError, ConfigError, VledgeError
from vledge.hashing import sha256_file
from vledge.images import PreprocessSpec
from vledge.text import TextTokenizer, TokenizerSpec

MODEL_TYPE = "vledge-dual-encoder"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESS_FILE = "preprocessor_config.json"
LABELS_FILE = "labels.json"


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, or an integer too long
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{what} {path} is not valid JSON for vledge: nested too deeply") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, not a {type(data).__name__}")
    return data


def save_safetensors(state: dict, path: Path) -> None:
    """``safetensors.torch.save_file``, with its I/O failures (a full disk) raised as the OSError they are."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:  # its message carries the OS error: "... (os error 28)"
        code = re.search(r"os error (\d+)", str(exc))
        number = int(code.group(1)) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from exc


def save_dual_encoder(model, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a DualEncoder with vledge towers to ``folder`` (created if needed).

    config.json records the weights file's sha256, so that a corrupted file is refused on load
    (safetensors itself checks only its header).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_safetensors(state, root / WEIGHTS_FILE)
    config = {
        "model_type": MODEL_TYPE,
        "format_version": CHECKPOINT_VERSION,
        "embed_dim": model.embed_dim,
        "image_tower": model.image_tower.config,
        "text_tower": model.text_tower.config,
        "tokenizer": model.tokenizer.spec.to_dict(),
        "weights_sha256": sha256_file(root / WEIGHTS_FILE),
        **(extra or {}),
    }
    (root / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (root / PREPROCESS_FILE).write_text(json.dumps(model.preprocess.to_dict(), indent=2) + "\n")
    model.tokenizer.save(root)
    if model.labels:
        (root / LABELS_FILE).write_text(json.dumps(model.labels, indent=2) + "\n")
    return root


def load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: it is truncated or not a safetensors file ({exc})") from None


def load_state(model, state: dict, where: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1:2] or [str(exc)]
        raise CheckpointError(f"weights in {where} do not fit the model in its config.json: {first[0]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {where} do not fit the model in its config.json: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_dual_encoder(folder: str | os.PathLike):
    """Read a vledge checkpoint folder written by :func:`save_dual_encoder`."""
    from vledge.models.dual_encoder import DualEncoder
    from vledge.models.image_towers import build_image_tower
    from vledge.models.size_check import build_checked
    from vledge.models.text_towers import build_text_tower

    root = Path(folder)
    config = read_json(root / CONFIG_FILE, "model config")
    if config.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{root / CONFIG_FILE}: checkpoint format_version {config.get('format_version')!r} "
            f"is not supported (this vledge reads {CHECKPOINT_VERSION})"
        )
    try:
        embed_dim = int(config["embed_dim"])
        image, text = build_checked(lambda: (build_image_tower(config["image_tower"], embed_dim),
                                             build_text_tower(config["text_tower"], embed_dim)), root)
        tok_spec = TokenizerSpec.from_dict(config["tokenizer"])
    except VledgeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE} is missing or has a malformed field: {exc!r}") from None
    if Path(tok_spec.file).name != tok_spec.file:
        raise CheckpointError(f"{root / CONFIG_FILE} names tokenizer file {tok_spec.file!r} outside its folder")
    try:
        preprocess = PreprocessSpec.from_dict(read_json(root / PREPROCESS_FILE, "preprocessing config"))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{root / PREPROCESS_FILE} has a malformed field: {exc}") from None
    tokenizer = TextTokenizer.from_file(root / tok_spec.file, tok_spec)
    labels = read_json(root / LABELS_FILE, "label set") if (root / LABELS_FILE).is_file() else None
    model = DualEncoder(
        image, text, preprocess=preprocess, tokenizer=tokenizer, labels=labels,
        source={"kind": MODEL_TYPE, "path": str(root), "config": config},
    )
    state = load_safetensors(root / WEIGHTS_FILE)
    expected = config.get("weights_sha256")
    if expected is not None and sha256_file(root / WEIGHTS_FILE) != expected:
        raise CheckpointError(
            f"{root / WEIGHTS_FILE} does not match the sha256 in its config.json: the file is corrupt or was "
            "changed after saving; restore it from a copy or train again"
        )
    load_state(model, state, root / WEIGHTS_FILE)
    model.eval()
    return model
