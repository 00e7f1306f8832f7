"""Teacher and student models (needs the ``compress`` extra: torch, torchvision, transformers)."""

from __future__ import annotations

import os
from pathlib import Path

from vledge.errors import CheckpointError
from vledge.models import hf_clip, narrow_resnet  # noqa: F401  register the clip-* and narrow_resnet towers
from vledge.models.base_model import load_base_model
from vledge.models.checkpoint import load_dual_encoder, save_dual_encoder
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
    model = load_base_model(root, allow_pickle)
    if adapter is not None:
        model = lora.merge_adapter_(model, Path(adapter), allow_pickle=allow_pickle)
    return model


__all__ = ["DualEncoder", "load_teacher", "load_dual_encoder", "save_dual_encoder"]
