"""`vledge train`: joint contrastive + cross-entropy training of a dual encoder, or LoRA fine-tuning."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vledge.data import load_dataset
from vledge.data.base import ImageTextDataset, Subset, split
from vledge.data.prefetch import prefetched
from vledge.errors import CheckpointError, ConfigError
from vledge.evaluate import TorchEmbedder, evaluate
from vledge.images import PreprocessSpec
from vledge.progress import progress_bar
from vledge.train import distributed
from vledge.train.config import TrainConfig
from vledge.train.losses import joint_loss
from vledge.train.schedule import warmup_cosine
from vledge.train.state import load_train_state, save_train_state

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = 100.0


@dataclass
class TrainReport:
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


def _augment(pixels: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def _flips(idx: np.ndarray, kept: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Which kept images to flip: drawn for the whole global batch, so every rank draws the same."""
    flip = torch.rand(len(idx), generator=generator) < 0.5
    return flip[torch.from_numpy(np.searchsorted(idx, kept))]


def _step(model, encode, batch, whole, captions, classes, templates, config: TrainConfig, flip) -> tuple[torch.Tensor, dict]:
    """One step's loss over the global batch ``whole``; this rank embeds its own images and every text."""
    device = model.device()
    pixels = _augment(torch.from_numpy(batch.pixels), flip).to(device)
    labels = whole.rows(torch.from_numpy(batch.labels).to(device))
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
    return joint_loss(
        image, text, scale, class_embeds=class_emb, labels=labels, contrastive_weight=config.contrastive_weight
    )


def _val_metric(val: dict) -> float:
    """What picks the best epoch: zero-shot top-1, or image->text recall@1 for unlabelled data."""
    return val["top1"] if val["top1"] is not None else val["recall"].get("i2t@1", 0.0)


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


def _save_best(model, out: Path, config: TrainConfig, history: list, base: str | None, peft_model) -> None:
    """Write the best checkpoint beside the training state; each file lands by an atomic rename."""
    import os
    import shutil

    from vledge.models import save_dual_encoder

    tmp = out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if peft_model is not None:
        from vledge.models.lora import save_adapter

        save_adapter(peft_model, tmp, base)
    else:
        save_dual_encoder(model, tmp, extra={"training": {"config": config.to_dict(), "history": history}})
    for file in tmp.iterdir():
        os.replace(file, out / file.name)
    tmp.rmdir()


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Check and create ``out`` on rank 0; the other ranks wait for it."""
    if distributed.is_main():
        _check_out(out, resume, overwrite)
    distributed.barrier()


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    from vledge.train.state import STATE_DIR

    has_run = out.exists() and any(out.iterdir())
    if resume and not (out / STATE_DIR).is_dir():
        raise CheckpointError(f"cannot resume: {out} holds no training state (no epoch finished there)")
    if has_run and not resume and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --resume to continue that run or --overwrite to start again")
    if has_run and overwrite and not resume:
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


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
    main = distributed.is_main()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, "train", config.data_dir)
    train_set, val_set = split(data, config.val_fraction, config.seed)
    if config.max_samples and len(train_set) > config.max_samples:
        keep = np.random.default_rng(config.seed).choice(len(train_set), config.max_samples, replace=False)
        train_set = Subset(train_set, np.sort(keep))
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{data.describe()} has fewer training images than one batch ({config.batch_size})")
    _prepare_out(out, resume, overwrite)

    peft_model = None
    if config.lora is not None:
        from vledge.models import load_teacher
        from vledge.models.lora import add_lora

        model = load_teacher(base)
        peft_model = add_lora(model, **config.lora)
    else:
        model = new_model(config, data)
    model.to(distributed.device())
    optimizer = _optimizer(model, config)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, int(total * config.warmup_fraction))
    )
    start_epoch, best, history, best_epoch = 0, -1.0, [], 0
    if resume:
        meta = load_train_state(out, model, optimizer, scheduler)
        start_epoch, best, history = meta["epoch"], meta["best"], meta["history"]
        best_epoch = max(history, key=lambda h: _val_metric(h["val"]))["epoch"] if history else 0
        log.info("resuming %s after epoch %d", out, start_epoch)
    encode = distributed.data_parallel(model)

    classes, templates = data.classes, list(data.templates)
    generator = torch.Generator().manual_seed(config.seed)
    skipped = 0
    for epoch in range(start_epoch, config.epochs):
        generator.manual_seed(config.seed + epoch)
        order = np.random.default_rng(config.seed + epoch).permutation(len(train_set))
        model.train()
        totals: dict[str, float] = {}
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=progress and main)
        steps = iter(bar)

        def decode(step):
            idx = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
            return idx, train_set.batch(distributed.shard(idx), model.preprocess, variant=epoch + step,
                                        strict=config.strict_images)

        for step, (idx, batch) in prefetched(decode, range(steps_per_epoch)):
            next(steps, None)
            skipped += len(batch.skipped)
            whole = distributed.GlobalBatch(idx, batch.indices)
            if not whole.usable():
                continue
            flip = _flips(idx, batch.indices, generator)
            captions = whole.captions(train_set, epoch + step, batch.captions)
            loss, parts = _step(model, encode, batch, whole, captions, classes, templates, config, flip)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / steps_per_epoch
        model.eval()
        val = evaluate(TorchEmbedder(model), val_set) if main else None
        metric = distributed.broadcast_floats([_val_metric(val.to_dict()) if main else 0.0])[0]
        history.append({"epoch": epoch + 1, "loss": totals, "val": val.to_dict() if main else None,
                        "seconds": round(time.time() - started, 1)})
        if metric > best:
            best, best_epoch = metric, epoch + 1
            if main:
                _save_best(model, out, config, history, str(base) if base else None, peft_model)
        if main:
            save_train_state(out, model, optimizer, scheduler, epoch=epoch + 1, best=best, history=history)
        log.info(
            "epoch %d/%d: loss %s, val %s %.4f (best %.4f), %.0f s",
            epoch + 1, config.epochs, {k: round(v, 4) for k, v in totals.items()},
            "top-1" if classes else "i2t@1", metric, best, time.time() - started,
        )
    skipped = int(distributed.all_reduce_sum({"skipped": skipped})["skipped"])
    distributed.barrier()  # the others leave once rank 0 has written everything
    return TrainReport(
        out=str(out), epochs_run=config.epochs - start_epoch, best_epoch=best_epoch,
        best_val_top1=best if classes else None, history=history, seconds=time.time() - started,
        skipped_images=skipped,
    )
