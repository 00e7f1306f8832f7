"""Reading a base model folder: a vledge checkpoint (``vledge train``) or a Hugging Face CLIP folder.

What ``load_teacher`` reads for a plain folder, and what a LoRA adapter folder names as its base.
"""

from __future__ import annotations

from pathlib import Path

from vledge.errors import CheckpointError
from vledge.models.checkpoint import CONFIG_FILE, MODEL_TYPE, load_dual_encoder, read_json
from vledge.models.dual_encoder import DualEncoder
from vledge.models.hf_clip import load_clip_folder


def load_base_model(root: Path, allow_pickle: bool) -> DualEncoder:
    """The model in ``root``, by its config's ``model_type``; a CheckpointError for any other kind."""
    config = read_json(root / CONFIG_FILE, "model config")
    model_type = config.get("model_type")
    if model_type == MODEL_TYPE:
        return load_dual_encoder(root)
    if model_type == "clip":
        return load_clip_folder(root, allow_pickle=allow_pickle)
    raise CheckpointError(
        f"{root / CONFIG_FILE} has model_type {model_type!r}; vledge reads {MODEL_TYPE!r} "
        "checkpoints (vledge train) and Hugging Face 'clip' folders"
    )
