"""Teacher and student models (needs the ``compress`` extra: torch, torchvision, transformers)."""

from __future__ import annotations

import os
from pathlib import Path

from vledge.errors import CheckpointError
from vledge.models import hf_clip, narrow_resnet  # noqa: F401  register the clip-* and narrow_resnet towers
from vledge.models.checkpoint import CONFIG_FILE, MODEL_TYPE, load_dual_encoder, read_json, save_dual_encoder
from vledge.models.dual_encoder import DualEncoder

ADAPTER_CONFIG = "adapter_config.json"


def load_teacher(path: str | os.PathLike, *, adapter: str | os.PathLike | None = None, allow_pickle: bool = False) -> DualEncoder:
    """Load a joint model from a local folder, detecting its kind.

    Reads vledge's own checkpoints, Hugging Face ``CLIPModel`` folders, and PEFT LoRA adapter
    folders (on their own, naming their base, or given as ``adapter`` on top of ``path``); adapters
    are merged into the base weights on load.
    """
    from vledge.models import lora

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {root}")
    if (root / ADAPTER_CONFIG).is_file():
        return lora.load_adapter_folder(root, allow_pickle=allow_pickle)
    model = _load_base(root, allow_pickle)
    if adapter is not None:
        model = lora.merge_adapter_(model, Path(adapter), allow_pickle=allow_pickle)
    return model


def _load_base(root: Path, allow_pickle: bool) -> DualEncoder:
    config = read_json(root / CONFIG_FILE, "model config")
    model_type = config.get("model_type")
    if model_type == MODEL_TYPE:
        return load_dual_encoder(root)
    if model_type == "clip":
        return hf_clip.load_clip_folder(root, allow_pickle=allow_pickle)
    raise CheckpointError(
        f"{root / CONFIG_FILE} has model_type {model_type!r}; vledge reads {MODEL_TYPE!r} "
        "checkpoints (vledge train) and Hugging Face 'clip' folders"
    )


__all__ = ["DualEncoder", "load_teacher", "load_dual_encoder", "save_dual_encoder"]
