"""Tiny seeded models (well under 1 MB) shared by the tests."""

from __future__ import annotations

import torch

from vledge.data.base import DEFAULT_TEMPLATES
from vledge.data.fashion_mnist import CLASSES
from vledge.images import PreprocessSpec
from vledge.text import build_wordpiece

TINY_PREPROCESS = PreprocessSpec(image_size=28, mean=(0.286, 0.286, 0.286), std=(0.353, 0.353, 0.353))
TINY_TEXT = {"arch": "bert", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
TINY_IMAGE = {
    "vit": {"arch": "vit", "patch_size": 7, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
    "mobilenet": {"arch": "mobilenet_v3_small", "width_mult": 0.25},
}


def tiny_tokenizer(max_length: int = 16):
    texts = [t.format(c) for c in CLASSES for t in DEFAULT_TEMPLATES] + ["an emoji 🙂 and ümlauts"]
    return build_wordpiece(texts, vocab_size=200, max_length=max_length)


def tiny_dual_encoder(image: str = "vit", seed: int = 0, embed_dim: int = 16):
    from vledge.models.factory import build_dual_encoder

    torch.manual_seed(seed)
    model = build_dual_encoder(
        TINY_IMAGE[image], TINY_TEXT, embed_dim=embed_dim, tokenizer=tiny_tokenizer(),
        preprocess=TINY_PREPROCESS, labels={"classes": list(CLASSES), "templates": list(DEFAULT_TEMPLATES)},
    )
    return model.eval()


def teacher_reference(teacher, batch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's embeddings of a batch's images and of ``texts``, computed directly: what caches must equal."""
    with torch.no_grad():
        return teacher.encode_image(torch.from_numpy(batch.pixels)), teacher.encode_text(*teacher.tokenize(texts))
