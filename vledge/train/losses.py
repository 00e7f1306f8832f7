"""The joint training and distillation losses, each a small pure function over embeddings or logits."""

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


def affinity_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """In-batch affinity mimicking (TinyCLIP / CLIP-KD): KL from the teacher's image->text and text->image
    similarity distributions to the student's, all embeddings L2-normalised."""
    s = student_image @ student_text.t() / temperature
    t = teacher_image @ teacher_text.t() / temperature
    i2t = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True)
    t2i = F.kl_div(F.log_softmax(s.t(), dim=1), F.log_softmax(t.t(), dim=1), reduction="batchmean", log_target=True)
    return 0.5 * (i2t + t2i)


def embedding_mimic_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine between normalised student and teacher embeddings in the shared space."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
