"""Build a fresh vledge DualEncoder from tower configs (training from scratch, students, tests)."""

from __future__ import annotations

import math

from vledge.images import PreprocessSpec
from vledge.models.dual_encoder import DualEncoder
from vledge.models.image_towers import build_image_tower
from vledge.models.text_towers import build_text_tower
from vledge.text import TextTokenizer


def build_dual_encoder(
    image_tower: dict,
    text_tower: dict,
    *,
    embed_dim: int,
    tokenizer: TextTokenizer,
    preprocess: PreprocessSpec,
    labels: dict | None = None,
    logit_scale: float = math.log(1 / 0.07),
) -> DualEncoder:
    """Towers are built from their config dicts; the text tower's vocabulary comes from ``tokenizer``."""
    image_cfg = {**image_tower, "image_size": preprocess.image_size} if image_tower["arch"] == "vit" else dict(image_tower)
    text_cfg = {
        **text_tower,
        "vocab_size": tokenizer.backend.get_vocab_size(),
        "pad_id": tokenizer.spec.pad_id,
        "max_position": max(int(text_tower.get("max_position", 0)), tokenizer.spec.max_length),
    }
    return DualEncoder(
        build_image_tower(image_cfg, embed_dim),
        build_text_tower(text_cfg, embed_dim),
        preprocess=preprocess,
        tokenizer=tokenizer,
        labels=labels,
        logit_scale=logit_scale,
        source={"kind": "vledge-dual-encoder"},
    )
