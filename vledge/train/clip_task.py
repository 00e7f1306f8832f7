"""The training loop's task for `vledge train`: joint contrastive + cross-entropy training of a dual encoder
(or of its LoRA adapters), scored by zero-shot top-1 on the validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vledge.data.base import Batch, ImageTextDataset
from vledge.evaluate import TorchEmbedder, evaluate
from vledge.train import distributed
from vledge.train.config import TrainConfig
from vledge.train.losses import joint_loss
from vledge.train.loop import Step

MAX_LOGIT_SCALE = 100.0


def _augment(pixels: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def _flips(idx: np.ndarray, kept: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Which kept images to flip: drawn for the whole global batch, so every rank draws the same."""
    flip = torch.rand(len(idx), generator=generator) < 0.5
    return flip[torch.from_numpy(np.searchsorted(idx, kept))]


def val_metric(val: dict) -> float:
    """What picks the best epoch: zero-shot top-1, or image->text recall@1 for unlabelled data."""
    return val["top1"] if val["top1"] is not None else val["recall"].get("i2t@1", 0.0)


class ClipTrainTask:
    """One CLIP training run: ``model`` trains on ``train_set`` and is scored on ``val_set``.

    Each epoch makes ``passes`` shuffled passes over ``train_set``. ``peft_model`` (with ``base``, the adapted
    teacher's path) makes the best checkpoint a LoRA adapter.
    """

    def __init__(self, model, train_set: ImageTextDataset, val_set: ImageTextDataset, config: TrainConfig, *,
                 classes: list[str] | None, templates: list[str], passes: int = 1, peft_model=None,
                 base: str | None = None):
        self.model, self.train_set, self.val_set, self.config = model, train_set, val_set, config
        self.classes, self.templates = classes, templates
        self.peft_model, self.base = peft_model, base
        self.steps_per_pass, self.passes = len(train_set) // config.batch_size, passes
        self.steps_per_epoch = self.steps_per_pass * passes
        self.metric_name = "top-1" if classes else "i2t@1"
        self.generator = torch.Generator().manual_seed(config.seed)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norms and the logit scale."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, fused=True)

    def batches(self, epoch: int) -> list[np.ndarray]:
        seed, size = self.config.seed + epoch, self.config.batch_size
        self.generator.manual_seed(seed)
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(len(self.train_set)) for _ in range(self.passes)]
        return [np.sort(order[step * size : (step + 1) * size]) for order in orders for step in range(self.steps_per_pass)]

    def decode(self, indices: np.ndarray, epoch: int, step: int) -> Batch:
        return self.train_set.batch(indices, self.model.preprocess, variant=epoch + step,
                                    strict=self.config.strict_images)

    def loss(self, encode, step: Step) -> tuple[torch.Tensor, dict]:
        """The loss over the global batch; this rank embeds its own images and every text."""
        model, batch, whole = self.model, step.batch, step.whole
        flip = _flips(step.indices, batch.indices, self.generator)
        captions = whole.captions(self.train_set, step.epoch + step.number, batch.captions)
        pixels = _augment(torch.from_numpy(batch.pixels), flip).to(model.device())
        labels = whole.rows(torch.from_numpy(batch.labels).to(model.device()))
        classes, templates = self.classes, self.templates
        prompts = [t.format(c) for c in classes for t in templates] if classes and bool((labels >= 0).any()) else []
        # Captions made from class names repeat within a batch and are the class prompts themselves:
        # encoding each distinct text once cuts the text tower's cost several-fold.
        unique = list(dict.fromkeys(captions + prompts))
        position = {text: i for i, text in enumerate(unique)}
        local_image, text_all = encode(pixels, *model.tokenize(unique))
        image = whole.rows(local_image)
        text = text_all[[position[c] for c in captions]]
        class_emb = None
        if prompts:
            per_prompt = text_all[[position[p] for p in prompts]].view(len(classes), len(templates), -1)
            class_emb = torch.nn.functional.normalize(per_prompt.mean(1), dim=-1)
        scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return joint_loss(image, text, scale, class_embeds=class_emb, labels=labels,
                          contrastive_weight=self.config.contrastive_weight)

    def score(self) -> tuple[float, dict | None]:
        """Rank 0 evaluates the validation split; every rank gets its metric."""
        val = evaluate(TorchEmbedder(self.model), self.val_set).to_dict() if distributed.is_main() else None
        return distributed.broadcast_floats([val_metric(val) if val else 0.0])[0], val

    def entry(self, losses: dict, fields: dict | None) -> dict:
        return {"loss": losses, "val": fields}

    def save_best(self, out: Path, history: list[dict]) -> None:
        """Write the best checkpoint beside the training state; each file lands by an atomic rename."""
        import os
        import shutil

        from vledge.models import save_dual_encoder

        tmp = out / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if self.peft_model is not None:
            from vledge.models.lora import save_adapter

            save_adapter(self.peft_model, tmp, self.base)
        else:
            save_dual_encoder(self.model, tmp, extra={"training": {"config": self.config.to_dict(), "history": history}})
        for file in tmp.iterdir():
            os.replace(file, out / file.name)
        tmp.rmdir()
