"""Stage 3 of ``vledge compress``: distil a frozen teacher's embedding space into a student.

Per training batch (TinyCLIP / CLIP-KD):
- affinity: the student's in-batch image->text and text->image similarity distributions match the
  teacher's (KL at ``temperature``);
- mimicry: student image and text embeddings point where the teacher's do (1 - cosine);
- contrastive: plain InfoNCE on the student, only when the data has real captions;
- with class names (``data.classes``): every class prompt (classes x templates) is mimicked each step,
  and each image's distribution over the prompt-ensemble classes matches the teacher's, since those
  prompts are what zero-shot classification compares against.

The held-out split drives early stopping (distillation loss or top-1 agreement with the teacher); the
best weights seen on it, the student as built included, are restored at the end.

Under ``torchrun`` the distillation is data-parallel (:mod:`vledge.train.distributed`): each rank embeds its
share of every global batch, the losses see the whole batch, and rank 0 alone scores the held-out split.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vledge.data.base import Batch, ImageTextDataset
from vledge.data.prefetch import prefetched
from vledge.configs import versioned_fields
from vledge.registry import did_you_mean
from vledge.errors import ConfigError, DataError
from vledge.progress import progress_bar
from vledge.train import distributed
from vledge.train.losses import affinity_distillation_loss, contrastive_loss, embedding_mimic_loss
from vledge.train.schedule import warmup_cosine

log = logging.getLogger(__name__)

CONFIG_VERSION = 1
MONITORS = ("loss", "agreement")

# (batch, texts) -> the teacher's normalised image embeddings (B, D) and text embeddings (len(texts), D).
# An object that also has ``encode_texts(texts) -> (len(texts), D)`` serves the class prompts as well, so a
# warm cache of teacher outputs (vledge.compress.teacher_cache) runs no teacher at all.
TeacherForward = Callable[[Batch, "list[str]"], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings.

    epochs, batch_size, lr, weight_decay, warmup_fraction: AdamW with linear warm-up then cosine decay.
    temperature: of the affinity distributions (similarity / temperature).
    affinity_weight, mimic_weight, contrastive_weight: weights of the three loss terms.
    val_fraction: share of the (capped) data held out for early stopping and best-weight selection.
    patience: epochs without improvement of ``monitor`` tolerated before stopping; None never stops early.
    monitor: "loss" (held-out distillation loss) or "agreement" (held-out top-1 agreement with the teacher).
    min_delta: the least change of the monitored value that counts as an improvement.
    max_samples: cap on training images per epoch, to bound time (None: all); the held-out split is
        ``val_fraction`` of the pool they are drawn from.
    seed: data split, shuffling and dropout. num_threads: torch CPU threads while distilling (None: as is).
    """

    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    temperature: float = 0.05
    affinity_weight: float = 1.0
    mimic_weight: float = 1.0
    contrastive_weight: float = 0.1
    val_fraction: float = 0.05
    patience: int | None = 2
    monitor: str = "loss"
    min_delta: float = 0.0
    max_samples: int | None = 30000
    seed: int = 0
    num_threads: int | None = None

    def __post_init__(self):
        def count(v, least):
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        weights = (self.affinity_weight, self.mimic_weight, self.contrastive_weight)
        checks = [
            ("epochs", count(self.epochs, 1), "must be an integer >= 1"),
            ("batch_size", count(self.batch_size, 2), "must be an integer >= 2 (in-batch losses need pairs)"),
            ("lr", number(self.lr) and self.lr > 0, "must be a positive number"),
            ("weight_decay", number(self.weight_decay) and self.weight_decay >= 0, "must be >= 0"),
            ("warmup_fraction", number(self.warmup_fraction) and 0 <= self.warmup_fraction < 1, "must be in [0, 1)"),
            ("temperature", number(self.temperature) and self.temperature > 0, "must be a positive number"),
            ("affinity_weight", number(self.affinity_weight) and self.affinity_weight >= 0, "must be >= 0"),
            ("mimic_weight", number(self.mimic_weight) and self.mimic_weight >= 0, "must be >= 0"),
            ("contrastive_weight", number(self.contrastive_weight) and self.contrastive_weight >= 0, "must be >= 0"),
            ("mimic_weight", not all(map(number, weights)) or self.affinity_weight + self.mimic_weight > 0,
             "or affinity_weight must be positive, else nothing is distilled"),
            ("val_fraction", number(self.val_fraction) and 0 < self.val_fraction < 1, "must be in (0, 1)"),
            ("patience", self.patience is None or count(self.patience, 0), "must be None or an integer >= 0"),
            ("min_delta", number(self.min_delta) and self.min_delta >= 0, "must be >= 0"),
            ("max_samples", self.max_samples is None or count(self.max_samples, 2), "must be None or an integer >= 2"),
            ("seed", count(self.seed, 0), "must be an integer >= 0"),
            ("num_threads", self.num_threads is None or count(self.num_threads, 1), "must be None or an integer >= 1"),
        ]
        for name, ok, requirement in checks:
            if not ok:
                raise ConfigError(f"invalid DistillConfig: {name} {requirement}, got {getattr(self, name)!r}")
        if self.monitor not in MONITORS:
            raise ConfigError(
                f"invalid DistillConfig: monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}."
                f"{did_you_mean(str(self.monitor), MONITORS)}"
            )

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        return cls(**versioned_fields(cls, data, CONFIG_VERSION))



@dataclass
class DistillReport:
    """What distillation did. ``initial`` holds the held-out metrics of the student as built (epoch 0)."""

    epochs_run: int
    best_epoch: int  # 0: no epoch beat the student as built, which was kept
    monitor: str
    best_metric: float
    initial: dict
    history: list[dict] = field(default_factory=list)  # per epoch: losses, held-out metrics, lr, speed
    seconds: float = 0.0
    stopped_early: bool = False
    train_images: int = 0
    val_images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        kept = self.history[self.best_epoch - 1] if self.best_epoch else self.initial
        early = ", stopped early" if self.stopped_early else ""
        return (
            f"distil: {self.epochs_run} epochs{early} in {self.seconds:.1f} s on {self.train_images} images "
            f"({self.val_images} held out): loss {self.initial['val_loss']:.4f} -> {kept['val_loss']:.4f}, "
            f"teacher agreement {self.initial['val_agreement']:.3f} -> {kept['val_agreement']:.3f} "
            f"(epoch {self.best_epoch} kept)"
        )


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


class _Prompts:
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


def _unique_texts(captions: list[str], prompts: list[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """One list holding the prompts then any other caption once; positions of captions and prompts in it."""
    position = {t: i for i, t in enumerate(dict.fromkeys(prompts))}
    for caption in captions:
        position.setdefault(caption, len(position))
    texts = list(position)
    return texts, torch.tensor([position[c] for c in captions]), torch.tensor([position[p] for p in prompts], dtype=torch.long)


def _losses(config: DistillConfig, student, prompts: _Prompts, s_img, s_all, cap_pos, prompt_pos, t_img, t_txt, contrastive: bool):
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


def split_indices(n: int, config: DistillConfig) -> tuple[np.ndarray, np.ndarray]:
    """The sorted training and held-out indices that :func:`distill` uses on a data set of ``n`` items."""
    rng = np.random.default_rng(config.seed)
    pool_size = n if config.max_samples is None else min(n, max(4, math.ceil(config.max_samples / (1 - config.val_fraction))))
    pool = rng.permutation(n)[:pool_size]
    n_val = min(pool_size - 2, max(2, round(pool_size * config.val_fraction)))  # pairs on both sides
    return np.sort(pool[n_val:]), np.sort(pool[:n_val])


def _chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    # A trailing chunk of one cannot form in-batch pairs (and breaks BatchNorm): drop it.
    return [c for c in (indices[i : i + size] for i in range(0, len(indices), size)) if len(c) >= 2]


class _HeldOut:
    """The held-out batches and the teacher's outputs on them, computed once (the teacher is frozen).

    Pixels are decoded again at each evaluation rather than kept: at 224 px they would take ~600 kB an image.
    """

    def __init__(self, data, indices, config, student, teacher_forward):
        self.data, self.batches = data, []
        for chunk in _chunks(indices, config.batch_size) or [indices]:
            batch = data.batch(chunk, student.preprocess, variant=0)
            if len(batch.indices) < 2:
                continue
            texts, cap_pos, _ = _unique_texts(batch.captions, [])
            t_img, t_txt = (t.to(student.device()) for t in teacher_forward(batch, texts))
            self.batches.append((batch.indices, texts, cap_pos, t_img, t_txt[cap_pos]))
        if not self.batches:
            raise DataError(f"no held-out batch of {data.describe()} could be decoded")
        self.images = sum(len(b[0]) for b in self.batches)

    @torch.no_grad()
    def evaluate(self, student, prompts: _Prompts, config: DistillConfig) -> dict:
        student.eval()
        s_prompts = student.encode_text(*student.tokenize(prompts.texts)) if prompts.texts else None
        offset = len(prompts.texts)
        loss, agree = 0.0, 0
        for indices, texts, cap_pos, t_img, t_txt in self.batches:
            pixels = self.data.batch(indices, student.preprocess, variant=0).pixels
            s_img = student.encode_image(torch.from_numpy(pixels).to(student.device()))
            s_own = student.encode_text(*student.tokenize(texts))
            s_all = torch.cat([s_prompts, s_own]) if s_prompts is not None else s_own
            total, _ = _losses(config, student, prompts, s_img, s_all, cap_pos + offset, torch.arange(offset), t_img, t_txt, False)
            loss += float(total) * len(indices)
            if prompts.texts:  # zero-shot class agreement
                s_ref, t_ref = prompts.classes(s_prompts), prompts.classes(prompts.teacher)
            else:  # in-batch image -> caption retrieval agreement
                s_ref, t_ref = s_all[cap_pos + offset], t_txt
            agree += int(((s_img @ s_ref.t()).argmax(1) == (t_img @ t_ref.t()).argmax(1)).sum())
        return {"val_loss": loss / self.images, "val_agreement": agree / self.images}


def _optimizer(student, config: DistillConfig) -> torch.optim.Optimizer:
    # The logit scale stays the teacher's; norms and biases take no weight decay.
    params = [(n, p) for n, p in student.named_parameters() if p.requires_grad and n != "logit_scale"]
    decay = [p for _, p in params if p.dim() >= 2]
    no_decay = [p for _, p in params if p.dim() < 2]
    # One fused kernel rather than a dozen ops per tensor: 11 -> 4 ms a step for the narrow ResNet student on CPU.
    fused = student.device().type in ("cpu", "cuda") or None
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, fused=fused,
    )


def _improved(value: float, best: float, config: DistillConfig) -> bool:
    if config.monitor == "loss":
        return value < best - config.min_delta
    return value > best + config.min_delta


def distill(student, teacher, data: ImageTextDataset, config: DistillConfig | None = None, *,
            teacher_forward: TeacherForward | None = None) -> DistillReport:
    """Train ``student`` in place to reproduce ``teacher`` on ``data``; return a :class:`DistillReport`.

    The teacher runs in eval mode under ``no_grad`` and is never updated. ``teacher_forward`` replaces
    :class:`TeacherOutputs` (e.g. with a :class:`~vledge.compress.teacher_cache.TeacherCache`). The
    student ends in eval mode holding the weights that scored best on the held-out split. Under torchrun
    every rank ends with the same student and the same report. A CNN image tower trains channels-last on
    CPU and is given back contiguous.
    """
    config = config or DistillConfig()
    if student.embed_dim != teacher.embed_dim:
        raise ConfigError(
            f"student embed_dim {student.embed_dim} differs from the teacher's {teacher.embed_dim}: "
            "build the student with vledge.compress.students.build_student so both share one space"
        )
    if not data.classes and not data.has_captions:
        raise DataError(f"{data.describe()} has neither captions nor class names: distillation needs texts")
    if len(data) < 4:
        raise DataError(f"{data.describe()}: distillation needs at least 4 images (two to train on, two held out)")
    threads = torch.get_num_threads()
    teacher_was_training = teacher.training
    devices = student.device(), teacher.device()
    parallel = distributed.init_from_env()
    # DDP expects a gradient for every trainable parameter; the logit scale stays the teacher's.
    frozen = [student.logit_scale] if parallel and student.logit_scale.requires_grad else []
    channels_last = _trains_faster_channels_last(student, parallel)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        teacher.eval()
        for p in frozen:
            p.requires_grad_(False)
        if parallel:
            student.to(distributed.device())
            teacher.to(distributed.device())
        if channels_last:
            student.image_tower.to(memory_format=torch.channels_last)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return _run(student, teacher, data, config, teacher_forward or TeacherOutputs(teacher))
    finally:
        if channels_last:
            student.image_tower.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(threads)
        for p in frozen:
            p.requires_grad_(True)
        student.to(devices[0])
        teacher.to(devices[1])
        teacher.train(teacher_was_training)
        student.eval()


def _trains_faster_channels_last(student, parallel: bool) -> bool:
    """A CNN image tower (BatchNorm after convolutions) training on CPU. Channels-last memory, measured on CPU
    only: the narrow ResNet students' image forward+backward 1.2x faster (max-pooling and BatchNorm backward
    above all), the MobileNetV3 students' 1.7-1.8x. A ViT's gains nothing. The tower is given back contiguous."""
    device = distributed.device() if parallel else student.device()
    tower = student.image_tower
    return (device.type == "cpu" and any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
            and all(p.is_contiguous() for p in tower.parameters()))


class _TokenMemo:
    """The student's tokens of the last text list asked for. With class prompts and no captions, every step
    asks for the same texts (the prompts), so they are tokenized once rather than at every step."""

    def __init__(self, student):
        self.student, self.texts, self.tokens = student, None, None

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if texts != self.texts:
            self.texts, self.tokens = list(texts), self.student.tokenize(texts)
        return self.tokens


def _train_step(student, encode, tokenize: _TokenMemo, batch: Batch, whole: distributed.GlobalBatch, captions: list[str],
                prompts: _Prompts, teacher_forward: TeacherForward, optimizer, config, contrastive) -> dict:
    """One step over the global batch ``whole``: this rank embeds its own images and every text."""
    device = student.device()
    texts, cap_pos, prompt_pos = _unique_texts(captions, prompts.texts)
    t_img, t_txt = (t.to(device) for t in teacher_forward(batch, texts))
    s_img, s_all = encode(torch.from_numpy(batch.pixels).to(device), *tokenize(texts))
    s_img, t_img = whole.rows(s_img), whole.rows(t_img)
    loss, parts = _losses(config, student, prompts, s_img, s_all, cap_pos, prompt_pos, t_img, t_txt[cap_pos], contrastive)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **parts}


def _held_out_metrics(held_out: "_HeldOut | None", student, prompts: _Prompts, config: DistillConfig) -> dict:
    """Rank 0 scores the held-out split; every rank gets the figures."""
    values = held_out.evaluate(student, prompts, config) if held_out else {"val_loss": 0.0, "val_agreement": 0.0}
    loss, agreement = distributed.broadcast_floats([values["val_loss"], values["val_agreement"]])
    return {"val_loss": loss, "val_agreement": agreement}


def _check_ranks_agree(student, teacher) -> None:
    # Every rank embeds every text: a tokenizer built differently in each process would split them.
    for role, model in (("student", student), ("teacher", teacher)):
        if not distributed.same_on_every_rank(model.tokenizer.backend.to_str()):
            raise ConfigError(f"the {role}'s tokenizer differs between ranks: load the models from the same "
                              "checkpoint on every rank rather than building them in each process")


def _run(student, teacher, data, config: DistillConfig, teacher_forward: TeacherForward) -> DistillReport:
    start = time.perf_counter()
    main = distributed.is_main()
    _check_ranks_agree(student, teacher)
    train_idx, val_idx = split_indices(len(data), config)
    prompts = _Prompts(data, teacher, student.device(), teacher_forward)
    held_out = _HeldOut(data, val_idx, config, student, teacher_forward) if main else None
    contrastive = bool(data.has_captions and config.contrastive_weight > 0)
    steps_per_epoch = max(1, len(_chunks(train_idx, config.batch_size)))
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(student, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(config.warmup_fraction * total_steps), floor=0.0)
    )
    encode, tokenize = distributed.data_parallel(student), _TokenMemo(student)
    initial = _held_out_metrics(held_out, student, prompts, config)
    metric = "val_loss" if config.monitor == "loss" else "val_agreement"
    best, best_epoch, bad_epochs = initial[metric], 0, 0
    best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    val_images = int(distributed.broadcast_floats([held_out.images if main else 0])[0])
    report = DistillReport(0, 0, config.monitor, best, initial, train_images=len(train_idx), val_images=val_images)
    rng = np.random.default_rng(config.seed + 1)
    bar = progress_bar(range(total_steps), desc="distil", total=total_steps, enabled=main and log.isEnabledFor(logging.INFO))
    steps = iter(bar)
    for epoch in range(1, config.epochs + 1):
        epoch_start, seen, sums = time.perf_counter(), 0, {}
        student.train()
        chunks = _chunks(rng.permutation(train_idx), config.batch_size) or [train_idx]

        def decode(chunk):
            return data.batch(distributed.shard(chunk), student.preprocess, variant=epoch)

        for chunk, batch in prefetched(decode, chunks):
            next(steps, None)
            whole = distributed.GlobalBatch(chunk, batch.indices)
            if not whole.usable():
                continue
            captions = whole.captions(data, epoch, batch.captions)
            parts = _train_step(student, encode, tokenize, batch, whole, captions, prompts, teacher_forward, optimizer, config,
                                contrastive)
            schedule.step()
            seen += len(whole.indices)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * len(whole.indices)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(epoch=epoch, loss=f"{parts['loss']:.4f}")
        train_seconds = time.perf_counter() - epoch_start
        held = _held_out_metrics(held_out, student, prompts, config)
        entry = {
            "epoch": epoch, **{f"train_{k}": v / max(1, seen) for k, v in sums.items()}, **held,
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start,
            "images_per_second": seen / max(train_seconds, 1e-9),
        }
        report.history.append(entry)
        report.epochs_run = epoch
        log.debug("distil epoch %d: %s", epoch, {k: round(v, 4) for k, v in entry.items()})
        if _improved(held[metric], best, config):
            best, best_epoch, bad_epochs = held[metric], epoch, 0
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            bad_epochs += 1
            if config.patience is not None and bad_epochs > config.patience:
                report.stopped_early = epoch < config.epochs
                break
    if hasattr(bar, "close"):
        bar.close()
    student.load_state_dict(best_state)
    report.best_epoch, report.best_metric = best_epoch, best
    report.seconds = time.perf_counter() - start
    log.info("%s", report.summary())
    return report
