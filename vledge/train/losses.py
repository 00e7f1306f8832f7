"""The losses of `vledge train`, each a small pure function over embeddings or logits (the distillation
losses live with the distil stage, in :mod:`vledge.compress.distil.losses`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: image i and text i are a pair, every other text (image) in the batch a negative."""
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.t(), targets))


def class_ce_loss(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of normalised image embeddings against normalised class-prompt embeddings."""
    return F.cross_entropy(scale * image_embeds @ class_embeds.t(), labels)


def joint_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    scale: torch.Tensor,
    *,
    class_embeds: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    contrastive_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = L_ce + λ·L_contrastive``; the CE term over the labelled items (label >= 0) where class
    embeddings are given."""
    l_con = contrastive_loss(scale * image_embeds @ text_embeds.t())
    parts = {"contrastive": float(l_con.detach())}
    loss = contrastive_weight * l_con
    keep = labels >= 0 if labels is not None else None
    if class_embeds is not None and keep is not None and bool(keep.any()):
        l_ce = class_ce_loss(image_embeds[keep], class_embeds, labels[keep], scale)
        parts["ce"] = float(l_ce.detach())
        loss = loss + l_ce
    return loss, parts
