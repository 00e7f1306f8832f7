"""Build a model's towers only once its config is known to fit its weights: a ``config.json`` naming a
huge hidden size would otherwise allocate its memory (160 GB was seen) before a weight is read."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vledge.errors import CheckpointError

BYTES_PER_PARAMETER = 2  # the fewest a checkpoint stores (fp16 / bf16)
SLACK_BYTES = 1 << 20  # headers, buffers, tied tensors


def weight_bytes(root: Path) -> int:
    """Bytes of every weight file in a checkpoint folder (single or sharded, safetensors or pickle)."""
    files = [*root.glob("*.safetensors"), *root.glob("pytorch_model*.bin")]
    return sum(f.stat().st_size for f in files if f.is_file())


def build_checked(build: Callable[[], tuple], root: Path) -> tuple:
    """``build()`` on torch's meta device first (no memory), then for real if its parameters can be in
    ``root``'s weight files; else a CheckpointError naming both sizes."""
    import torch

    try:
        with torch.device("meta"):
            towers = build()
    except NotImplementedError:  # a tower whose construction reads values (a pruning mask): build it for real
        return build()
    params = sum(p.numel() for tower in towers for p in tower.parameters())
    available = weight_bytes(root)
    if params * BYTES_PER_PARAMETER > available + SLACK_BYTES:
        raise CheckpointError(
            f"{root / 'config.json'} describes a model of {params / 1e6:,.1f}M parameters, but the weights in "
            f"{root} hold {available / 1e6:,.1f} MB (at least {params * BYTES_PER_PARAMETER / 1e6:,.1f} MB needed): "
            "the config does not belong to these weights; refusing to allocate it"
        )
    return build()
