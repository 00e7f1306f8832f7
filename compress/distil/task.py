"""The training loop's task for distillation: the student learns the teacher's outputs on each batch and is
scored on the held-out split (distillation loss, or top-1 agreement with the teacher)."""

from __future__ import annotations

import numpy as np
import torch

from vledge.compress.distil.config import DistillConfig
from vledge.compress.distil.held_out import HeldOut, chunks
from vledge.compress.distil.losses import distillation_loss
from vledge.compress.distil.teacher import Prompts, TeacherForward, unique_texts
from vledge.data.base import Batch, ImageTextDataset
from vledge.train import distributed
from vledge.train.loop import Step


class TokenMemo:
    """The student's tokens of the last text list asked for. With class prompts and no captions, every step
    asks for the same texts (the prompts), so they are tokenized once rather than at every step."""

    def __init__(self, student):
        self.student, self.texts, self.tokens = student, None, None

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if texts != self.texts:
            self.texts, self.tokens = list(texts), self.student.tokenize(texts)
        return self.tokens


class DistilTask:
    """One distillation: ``student`` learns ``teacher_forward``'s outputs on ``train_idx`` of ``data``.

    Each epoch makes ``passes`` shuffled passes over ``train_idx``. Rank 0 alone holds the held-out split and
    the teacher's outputs on it (``held_out`` None elsewhere).
    """

    def __init__(self, student, data: ImageTextDataset, train_idx: np.ndarray, held_out: HeldOut | None,
                 prompts: Prompts, teacher_forward: TeacherForward, config: DistillConfig, passes: int = 1):
        self.model, self.data, self.train_idx, self.held_out = student, data, train_idx, held_out
        self.prompts, self.teacher_forward, self.config = prompts, teacher_forward, config
        self.contrastive = bool(data.has_captions and config.contrastive_weight > 0)
        self.passes = passes
        self.steps_per_epoch = max(1, len(chunks(train_idx, config.batch_size))) * passes
        self.metric_key = "val_loss" if config.monitor == "loss" else "val_agreement"
        self.metric_name = "held-out loss" if config.monitor == "loss" else "teacher agreement"
        self.tokenize = TokenMemo(student)
        self.rng = np.random.default_rng(config.seed + 1)

    def optimizer(self) -> torch.optim.Optimizer:
        # The logit scale stays the teacher's; norms and biases take no weight decay.
        student, config = self.model, self.config
        params = [(n, p) for n, p in student.named_parameters() if p.requires_grad and n != "logit_scale"]
        decay = [p for _, p in params if p.dim() >= 2]
        no_decay = [p for _, p in params if p.dim() < 2]
        # One fused kernel rather than a dozen ops per tensor: 11 -> 4 ms a step for the narrow ResNet student on CPU.
        fused = student.device().type in ("cpu", "cuda") or None
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, fused=fused,
        )

    def batches(self, epoch: int) -> list[np.ndarray]:
        # The shuffles follow one generator from the run's start: a distillation does not resume mid-way.
        size = self.config.batch_size
        return [c for _ in range(self.passes) for c in chunks(self.rng.permutation(self.train_idx), size) or [self.train_idx]]

    def decode(self, indices: np.ndarray, epoch: int, step: int) -> Batch:
        return self.data.batch(indices, self.model.preprocess, variant=epoch + 1)

    def loss(self, encode, step: Step) -> tuple[torch.Tensor, dict]:
        """The loss over the global batch: this rank embeds its own images and every text."""
        device, batch, whole = self.model.device(), step.batch, step.whole
        captions = whole.captions(self.data, step.epoch + 1, batch.captions)
        texts, cap_pos, prompt_pos = unique_texts(captions, self.prompts.texts)
        t_img, t_txt = (t.to(device) for t in self.teacher_forward(batch, texts))
        s_img, s_all = encode(torch.from_numpy(batch.pixels).to(device), *self.tokenize(texts))
        s_img, t_img = whole.rows(s_img), whole.rows(t_img)
        loss, parts = distillation_loss(self.config, self.model, self.prompts, s_img, s_all, cap_pos, prompt_pos, t_img,
                                        t_txt[cap_pos], self.contrastive)
        return loss, {"loss": float(loss.detach()), **parts}

    def score(self) -> tuple[float, dict]:
        """Rank 0 scores the held-out split; every rank gets the figures."""
        values = (self.held_out.evaluate(self.model, self.prompts, self.config) if self.held_out
                  else {"val_loss": 0.0, "val_agreement": 0.0})
        loss, agreement = distributed.broadcast_floats([values["val_loss"], values["val_agreement"]])
        fields = {"val_loss": loss, "val_agreement": agreement}
        return fields[self.metric_key], fields

    def entry(self, losses: dict, fields: dict) -> dict:
        return {**{f"train_{k}": v for k, v in losses.items()}, **fields}
