"""The joint model: an image tower and a text tower projected into one L2-normalised space."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vledge.images import ImageInput, PreprocessSpec, preprocess
from vledge.text import TextTokenizer


class DualEncoder(nn.Module):
    """``encode_image``, ``encode_text`` and ``forward -> logits`` over any pair of towers.

    Every tower ends in a linear ``proj`` into the shared space and carries a ``config`` dict.

    Deployment metadata (preprocessing, tokenizer, label set) lives beside the towers, not in them,
    so a student can inherit it from its teacher unchanged.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        *,
        preprocess: PreprocessSpec,
        tokenizer: TextTokenizer,
        logit_scale: float = math.log(1 / 0.07),
        labels: dict | None = None,
        source: dict | None = None,
    ):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))  # log of the temperature's inverse
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.labels = labels  # {"classes": [...], "templates": [...]} when trained on a labelled set
        self.source = source or {}  # how this model was loaded: kind, path, config

    @property
    def embed_dim(self) -> int:
        return int(self.image_tower.proj.out_features)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.image_tower(pixel_values)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.text_tower(input_ids, attention_mask)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        """Logits of every image against every text, (B_images, B_texts)."""
        image = self.encode_image(pixel_values)
        text = self.encode_text(input_ids, attention_mask)
        return self.logit_scale.exp() * image @ text.t()

    # Convenience for raw inputs (evaluation, the torch runtime).
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(texts)
        return torch.from_numpy(ids).to(self.device()), torch.from_numpy(mask).to(self.device())

    def pixels(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        return torch.from_numpy(preprocess(images, self.preprocess)).to(self.device())

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = [self.encode_text(*self.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(out).float().cpu().numpy()
