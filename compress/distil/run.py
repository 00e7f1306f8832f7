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
best weights seen on it, the student as built included, are restored at the end. The steps run in the
training loop that `vledge train` uses (:mod:`vledge.train.loop`).

Under ``torchrun`` the distillation is data-parallel (:mod:`vledge.train.distributed`): each rank embeds its
share of every global batch, the losses see the whole batch, and rank 0 alone scores the held-out split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from vledge.compress.distil.config import DEFAULT_EPOCHS, DistillConfig
from vledge.compress.distil.held_out import HeldOut, chunks, split_indices
from vledge.compress.distil.task import DistilTask
from vledge.compress.distil.teacher import Prompts, TeacherForward, TeacherOutputs
from vledge.data.base import ImageTextDataset
from vledge.errors import ConfigError, DataError
from vledge.train import distributed
from vledge.train.loop import LoopConfig, run_loop
from vledge.train.schedule import epoch_plan

log = logging.getLogger(__name__)


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


def distill(student, teacher, data: ImageTextDataset, config: DistillConfig | None = None, *,
            teacher_forward: TeacherForward | None = None) -> DistillReport:
    """Train ``student`` in place to reproduce ``teacher`` on ``data``; return a :class:`DistillReport`.

    The teacher runs in eval mode under ``no_grad`` and is never updated. ``teacher_forward`` replaces
    :class:`~vledge.compress.distil.teacher.TeacherOutputs` (e.g. with a
    :class:`~vledge.compress.distil.cache.TeacherCache`). The student ends in eval mode holding the weights
    that scored best on the held-out split. Under torchrun every rank ends with the same student and the
    same report. A CNN image tower trains channels-last on CPU and is given back contiguous.
    """
    config = config or DistillConfig()
    _check_inputs(student, teacher, data)
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


def _check_inputs(student, teacher, data: ImageTextDataset) -> None:
    if student.embed_dim != teacher.embed_dim:
        raise ConfigError(
            f"student embed_dim {student.embed_dim} differs from the teacher's {teacher.embed_dim}: "
            "build the student with vledge.compress.students.build_student so both share one space"
        )
    if not data.classes and not data.has_captions:
        raise DataError(f"{data.describe()} has neither captions nor class names: distillation needs texts")
    if len(data) < 4:
        raise DataError(f"{data.describe()}: distillation needs at least 4 images (two to train on, two held out)")


def _trains_faster_channels_last(student, parallel: bool) -> bool:
    """A CNN image tower (BatchNorm after convolutions) training on CPU. Channels-last memory, measured on CPU
    only: the narrow ResNet students' image forward+backward 1.2x faster (max-pooling and BatchNorm backward
    above all), the MobileNetV3 students' 1.7-1.8x. A ViT's gains nothing. The tower is given back contiguous."""
    device = distributed.device() if parallel else student.device()
    tower = student.image_tower
    return (device.type == "cpu" and any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
            and all(p.is_contiguous() for p in tower.parameters()))


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
    prompts = Prompts(data, teacher, student.device(), teacher_forward)
    held_out = HeldOut(data, val_idx, config, student, teacher_forward) if main else None
    val_images = int(distributed.broadcast_floats([held_out.images if main else 0])[0])
    epochs, passes = epoch_plan(config.epochs, len(chunks(train_idx, config.batch_size)), default_epochs=DEFAULT_EPOCHS,
                                min_steps=config.min_steps)
    task = DistilTask(student, data, train_idx, held_out, prompts, teacher_forward, config, passes)
    log.info("distil: %d images (%d held out), up to %d epochs of %d pass%s (%d steps of %d)", len(train_idx),
             val_images, epochs, passes, "es" if passes > 1 else "", epochs * task.steps_per_epoch, config.batch_size)
    loop = LoopConfig(
        epochs=epochs, warmup_fraction=config.warmup_fraction, lr_floor=0.0,
        higher_is_better=config.monitor == "agreement", min_delta=config.min_delta, patience=config.patience,
        score_start=True, desc="distil", progress=log.isEnabledFor(logging.INFO),
    )
    state = run_loop(task, loop)
    report = DistillReport(
        epochs_run=state.epochs_run, best_epoch=state.best_epoch, monitor=config.monitor, best_metric=state.best,
        initial=state.initial, history=state.history, seconds=time.perf_counter() - start,
        stopped_early=state.stopped_early, train_images=len(train_idx), val_images=val_images,
    )
    log.info("%s", report.summary())
    return report
