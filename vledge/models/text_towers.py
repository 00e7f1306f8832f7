"""Text towers: transformer encoders pooled to one vector, then projected into the shared space.

A tower maps ``input_ids`` and ``attention_mask`` (B, L) int64 to unnormalised embeddings (B, embed_dim).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vledge.models.prune_shapes import apply_pruned_shapes_
from vledge.registry import Registry

# arch name -> factory(config, embed_dim) returning a tower module with a ``config`` attribute
TEXT_TOWERS: Registry[Callable[[dict, int], nn.Module]] = Registry("text tower")


def build_text_tower(config: dict, embed_dim: int) -> nn.Module:
    """Build from ``config``; a pruned tower replays its recorded shapes so its weights fit."""
    return apply_pruned_shapes_(TEXT_TOWERS.get(config["arch"])(config, embed_dim), config)


class PooledTextTower(nn.Module):
    """A Hugging Face encoder, mean- or CLS-pooled over the attention mask, then a linear projection."""

    def __init__(self, config: dict, embed_dim: int, encoder: nn.Module, width: int):
        super().__init__()
        self.config = dict(config)
        self.encoder = encoder
        self.pooling = self.config.setdefault("pooling", "mean")
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.proj(pooled)


@TEXT_TOWERS.register("bert")
def _bert(cfg: dict, embed_dim: int) -> nn.Module:
    from transformers import BertConfig, BertModel

    hidden = int(cfg.get("hidden_size", 256))
    config = BertConfig(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        num_hidden_layers=int(cfg.get("num_layers", 4)),
        num_attention_heads=int(cfg.get("num_heads", 4)),
        intermediate_size=int(cfg.get("intermediate_size", 4 * hidden)),
        max_position_embeddings=int(cfg.get("max_position", 64)),
        pad_token_id=int(cfg.get("pad_id", 0)),
        attn_implementation="eager",
    )
    return PooledTextTower(cfg, embed_dim, BertModel(config, add_pooling_layer=False), hidden)
