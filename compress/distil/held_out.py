"""The held-out split that scores a distillation: which images it takes, and the student's loss and
agreement with the teacher on them."""

from __future__ import annotations

import math

import numpy as np
import torch

from vledge.compress.distil.config import DistillConfig
from vledge.compress.distil.losses import distillation_loss
from vledge.compress.distil.teacher import Prompts, unique_texts
from vledge.errors import DataError


def split_indices(n: int, config: DistillConfig) -> tuple[np.ndarray, np.ndarray]:
    """The sorted training and held-out indices that ``distill`` uses on a data set of ``n`` items."""
    rng = np.random.default_rng(config.seed)
    pool_size = n if config.max_samples is None else min(n, max(4, math.ceil(config.max_samples / (1 - config.val_fraction))))
    pool = rng.permutation(n)[:pool_size]
    n_val = min(pool_size - 2, max(2, round(pool_size * config.val_fraction)))  # pairs on both sides
    return np.sort(pool[n_val:]), np.sort(pool[:n_val])


def chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """``indices`` in batches of ``size``. A trailing batch of one cannot form in-batch pairs (and breaks
    BatchNorm): it is dropped."""
    return [c for c in (indices[i : i + size] for i in range(0, len(indices), size)) if len(c) >= 2]


class HeldOut:
    """The held-out batches and the teacher's outputs on them, computed once (the teacher is frozen).

    Pixels are decoded again at each evaluation rather than kept: at 224 px they would take ~600 kB an image.
    """

    def __init__(self, data, indices, config, student, teacher_forward):
        self.data, self.batches = data, []
        for chunk in chunks(indices, config.batch_size) or [indices]:
            batch = data.batch(chunk, student.preprocess, variant=0)
            if len(batch.indices) < 2:
                continue
            texts, cap_pos, _ = unique_texts(batch.captions, [])
            t_img, t_txt = (t.to(student.device()) for t in teacher_forward(batch, texts))
            self.batches.append((batch.indices, texts, cap_pos, t_img, t_txt[cap_pos]))
        if not self.batches:
            raise DataError(f"no held-out batch of {data.describe()} could be decoded")
        self.images = sum(len(b[0]) for b in self.batches)

    @torch.no_grad()
    def evaluate(self, student, prompts: Prompts, config: DistillConfig) -> dict:
        """The student's mean distillation loss and its top-1 agreement with the teacher on the split."""
        student.eval()
        s_prompts = student.encode_text(*student.tokenize(prompts.texts)) if prompts.texts else None
        offset = len(prompts.texts)
        loss, agree = 0.0, 0
        for indices, texts, cap_pos, t_img, t_txt in self.batches:
            pixels = self.data.batch(indices, student.preprocess, variant=0).pixels
            s_img = student.encode_image(torch.from_numpy(pixels).to(student.device()))
            s_own = student.encode_text(*student.tokenize(texts))
            s_all = torch.cat([s_prompts, s_own]) if s_prompts is not None else s_own
            total, _ = distillation_loss(config, student, prompts, s_img, s_all, cap_pos + offset, torch.arange(offset),
                                         t_img, t_txt, False)
            loss += float(total) * len(indices)
            if prompts.texts:  # zero-shot class agreement
                s_ref, t_ref = prompts.classes(s_prompts), prompts.classes(prompts.teacher)
            else:  # in-batch image -> caption retrieval agreement
                s_ref, t_ref = s_all[cap_pos + offset], t_txt
            agree += int(((s_img @ s_ref.t()).argmax(1) == (t_img @ t_ref.t()).argmax(1)).sum())
        return {"val_loss": loss / self.images, "val_agreement": agree / self.images}
