"""vledge's own checkpoint folder: config.json, model.safetensors, tokenizer.json, preprocessor_config.json.

No pickle: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vledge.errors import CheckpointError
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
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from None


def save_dual_encoder(model, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a DualEncoder with vledge towers to ``folder`` (created if needed)."""
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": MODEL_TYPE,
        "format_version": CHECKPOINT_VERSION,
        "embed_dim": model.embed_dim,
        "image_tower": model.image_tower.config,
        "text_tower": model.text_tower.config,
        "tokenizer": model.tokenizer.spec.to_dict(),
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(root / WEIGHTS_FILE), metadata={"format": "pt"})
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
        image = build_image_tower(config["image_tower"], embed_dim)
        text = build_text_tower(config["text_tower"], embed_dim)
        tok_spec = TokenizerSpec.from_dict(config["tokenizer"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE} is missing or has a malformed field: {exc!r}") from None
    preprocess = PreprocessSpec.from_dict(read_json(root / PREPROCESS_FILE, "preprocessing config"))
    tokenizer = TextTokenizer.from_file(root / tok_spec.file, tok_spec)
    labels = read_json(root / LABELS_FILE, "label set") if (root / LABELS_FILE).is_file() else None
    model = DualEncoder(
        image, text, preprocess=preprocess, tokenizer=tokenizer, labels=labels,
        source={"kind": MODEL_TYPE, "path": str(root), "config": config},
    )
    load_state(model, load_safetensors(root / WEIGHTS_FILE), root / WEIGHTS_FILE)
    model.eval()
    return model
