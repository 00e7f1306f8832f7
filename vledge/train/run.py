"""`vledge train`: a dual encoder trained from scratch on a data set, or a teacher LoRA-tuned, by the loop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vledge.data import load_dataset
from vledge.data.base import ImageTextDataset, Subset, split
from vledge.errors import ConfigError
from vledge.images import PreprocessSpec
from vledge.train import distributed
from vledge.train.clip_task import ClipTrainTask
from vledge.train.config import DEFAULT_EPOCHS, TrainConfig
from vledge.train.loop import LoopConfig, run_loop
from vledge.train.schedule import epoch_plan
from vledge.train.state import prepare_out

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What a training run did; ``best_val_top1`` is None for unlabelled data."""

    out: str
    epochs_run: int
    best_epoch: int
    best_val_top1: float | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped_images: int = 0


def data_statistics(data: ImageTextDataset, image_size: int, n: int = 1000, seed: int = 0) -> tuple[tuple, tuple]:
    """Per-channel mean and std of a sample of the data, for the preprocessing spec."""
    probe = PreprocessSpec(image_size=image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
    pixels = data.batch(idx, probe).pixels
    mean = pixels.mean(axis=(0, 2, 3))
    std = np.maximum(pixels.std(axis=(0, 2, 3)), 1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def new_model(config: TrainConfig, data: ImageTextDataset):
    """A fresh dual encoder with a WordPiece tokenizer trained on the data's captions and class prompts
    (the same vocabulary in every process, so every torchrun rank builds its own)."""
    from vledge.models.factory import build_dual_encoder
    from vledge.text import build_wordpiece

    texts = [t.format(c) for c in (data.classes or []) for t in data.templates]
    if data.has_captions:
        texts += [data.caption(i) for i in range(len(data))]
    if not texts:
        raise ConfigError(f"{data.describe()} has neither captions nor class names to train a text tower on")
    tokenizer = build_wordpiece(texts, vocab_size=config.vocab_size, max_length=config.max_length)
    if config.mean is None or config.std is None:
        mean, std = data_statistics(data, config.image_size, seed=config.seed)
    else:
        mean, std = config.mean, config.std
    labels = {"classes": list(data.classes), "templates": list(data.templates)} if data.classes else None
    return build_dual_encoder(
        config.image_tower, config.text_tower, embed_dim=config.embed_dim, tokenizer=tokenizer,
        preprocess=PreprocessSpec(image_size=config.image_size, mean=mean, std=std), labels=labels,
    )


def _train_split(data: ImageTextDataset, config: TrainConfig) -> tuple[ImageTextDataset, ImageTextDataset]:
    train_set, val_set = split(data, config.val_fraction, config.seed)
    if config.max_samples and len(train_set) > config.max_samples:
        keep = np.random.default_rng(config.seed).choice(len(train_set), config.max_samples, replace=False)
        train_set = Subset(train_set, np.sort(keep))
    if len(train_set) < config.batch_size:
        raise ConfigError(f"{data.describe()} has fewer training images than one batch ({config.batch_size})")
    return train_set, val_set


def _model(config: TrainConfig, data: ImageTextDataset, base):
    """The model to train and, for LoRA, the PEFT model holding its adapters."""
    if config.lora is None:
        return new_model(config, data), None
    from vledge.models import load_teacher
    from vledge.models.lora import add_lora

    model = load_teacher(base)
    return model, add_lora(model, **config.lora)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    base: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainReport:
    """Train a dual encoder on ``config.data`` (or LoRA-tune the teacher at ``base``) into ``out``.

    The best epoch on the validation split (zero-shot top-1, or image->text recall@1 for unlabelled
    data) is kept at ``out``; ``resume`` continues from the last finished epoch.

    Under ``torchrun`` the training is data-parallel (see :mod:`vledge.train.distributed`): each rank
    takes its share of every global batch of ``config.batch_size``; rank 0 alone validates and writes,
    and the other ranks' reports hold no validation results.
    """
    started = time.time()
    out = Path(out)
    if config.lora is not None and base is None:
        raise ConfigError("LoRA fine-tuning needs the teacher to adapt: pass --base CHECKPOINT")
    distributed.init_from_env()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, "train", config.data_dir)
    train_set, val_set = _train_split(data, config)
    if distributed.is_main():
        prepare_out(out, resume, overwrite)
    distributed.barrier()
    model, peft_model = _model(config, data, base)
    model.to(distributed.device())
    epochs, passes = epoch_plan(config.epochs, len(train_set) // config.batch_size, default_epochs=DEFAULT_EPOCHS,
                                min_steps=config.min_steps)
    task = ClipTrainTask(model, train_set, val_set, config, classes=data.classes, templates=list(data.templates),
                         passes=passes, peft_model=peft_model, base=str(base) if base else None)
    log.info("train: %d images, %d epochs of %d pass%s (%d steps of %d)", len(train_set), epochs, passes,
             "es" if passes > 1 else "", epochs * task.steps_per_epoch, config.batch_size)
    loop = LoopConfig(epochs=epochs, warmup_fraction=config.warmup_fraction, lr_floor=0.02,
                      clip_grad_norm=1.0, out=out, resume=resume, desc="train", progress=progress)
    state = run_loop(task, loop)
    return TrainReport(
        out=str(out), epochs_run=state.epochs_run, best_epoch=state.best_epoch,
        best_val_top1=state.best if data.classes else None, history=state.history,
        seconds=time.time() - started, skipped_images=state.skipped_images,
    )
