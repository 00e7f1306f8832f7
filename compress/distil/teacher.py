"""What distillation asks of the frozen teacher: its embeddings of a batch's images and texts, and of the
class prompts."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from vledge.data.base import Batch, ImageTextDataset

# (batch, texts) -> the teacher's normalised image embeddings (B, D) and text embeddings (len(texts), D).
# An object that also has ``encode_texts(texts) -> (len(texts), D)`` serves the class prompts as well, so a
# warm cache of teacher outputs (vledge.compress.distil.cache) runs no teacher at all.
TeacherForward = Callable[[Batch, "list[str]"], "tuple[torch.Tensor, torch.Tensor]"]


class TeacherOutputs:
    """What ``distill`` runs when no cache is given: the teacher on every batch's images, and on the texts it
    has not seen. The class prompts (``encode_texts``, once) come back at every step: their embeddings are
    kept rather than recomputed, which was a quarter of each step on the demo teacher."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.known: dict[str, torch.Tensor] = {}

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            embeds = self.teacher.encode_text(*self.teacher.tokenize(texts))
        self.known.update(zip(texts, embeds))
        return embeds

    def __call__(self, batch: Batch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = [t for t in dict.fromkeys(texts) if t not in self.known]
        with torch.no_grad():
            images = self.teacher.encode_image(torch.from_numpy(batch.pixels).to(self.teacher.device()))
            fresh = dict(zip(new, self.teacher.encode_text(*self.teacher.tokenize(new)))) if new else {}
        return images, torch.stack([self.known[t] if t in self.known else fresh[t] for t in texts])


class Prompts:
    """The class prompts (classes x templates, class-major) and the teacher's embeddings of them."""

    def __init__(self, data: ImageTextDataset, teacher, device: torch.device, teacher_forward=None):
        self.texts = [t.format(c) for c in data.classes for t in data.templates] if data.classes else []
        self.n_classes = len(data.classes or [])
        self.teacher = None
        if self.texts:
            encode_texts = getattr(teacher_forward, "encode_texts", None)
            with torch.no_grad():
                embeds = encode_texts(self.texts) if encode_texts else teacher.encode_text(*teacher.tokenize(self.texts))
            self.teacher = embeds.to(device)

    def classes(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Prompt ensemble: the normalised mean of each class's prompts."""
        return F.normalize(prompt_embeds.view(self.n_classes, -1, prompt_embeds.shape[-1]).mean(1), dim=-1)


def unique_texts(captions: list[str], prompts: list[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """One list holding the prompts then any other caption once; positions of captions and prompts in it."""
    position = {t: i for i, t in enumerate(dict.fromkeys(prompts))}
    for caption in captions:
        position.setdefault(caption, len(position))
    texts = list(position)
    return texts, torch.tensor([position[c] for c in captions]), torch.tensor([position[p] for p in prompts], dtype=torch.long)
