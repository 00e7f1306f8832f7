"""The distillation losses: in-batch affinity mimicking, embedding mimicry, and their weighted sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vledge.train.losses import contrastive_loss


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


def distillation_loss(config, student, prompts, s_img, s_all, cap_pos, prompt_pos, t_img, t_txt,
                      contrastive: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of a batch's loss terms and each term's value.

    ``s_all`` holds the student's embeddings of the batch's distinct texts; ``cap_pos`` and ``prompt_pos``
    place each caption and each class prompt in it. ``t_txt`` is the teacher's embedding of each caption.
    With class prompts (``prompts.texts``) they are mimicked too, and each image's distribution over the
    prompt-ensemble classes matches the teacher's.
    """
    s_txt = s_all[cap_pos]
    affinity = affinity_distillation_loss(s_img, s_txt, t_img, t_txt, config.temperature)
    mimic = embedding_mimic_loss(s_img, t_img) + embedding_mimic_loss(s_txt, t_txt)
    if prompts.texts:
        s_prompts = s_all[prompt_pos]
        mimic = mimic + embedding_mimic_loss(s_prompts, prompts.teacher)
        affinity = affinity + affinity_distillation_loss(
            s_img, prompts.classes(s_prompts), t_img, prompts.classes(prompts.teacher), config.temperature
        )
    total = config.affinity_weight * affinity + config.mimic_weight * mimic
    parts = {"affinity": float(affinity.detach()), "mimic": float(mimic.detach())}
    if contrastive:
        scale = student.logit_scale.detach().exp()  # the teacher's scale, kept fixed
        con = contrastive_loss(scale * s_img @ s_txt.t())
        total = total + config.contrastive_weight * con
        parts["contrastive"] = float(con.detach())
    return total, parts
