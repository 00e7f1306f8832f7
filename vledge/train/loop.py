"""The one training loop behind `vledge train` and the distil stage.

A task says what one use trains (:class:`Task`): the batches of an epoch, how this rank decodes its share,
the loss of a step, and how the model scores on held-out data. The loop does the rest the same way for
every task: prefetching (the next batch decodes in a thread while a step runs), data parallelism under
torchrun (each rank decodes its share of every global batch; :mod:`vledge.train.distributed`), the
warm-up + cosine schedule, progress, validation after each epoch, the best weights (written by the task
beside a resumable state when the run has an output folder, else kept in memory and restored at the end),
early stopping and resume.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vledge.data.base import Batch
from vledge.data.prefetch import prefetched
from vledge.progress import progress_bar
from vledge.train import distributed
from vledge.train.schedule import warmup_cosine
from vledge.train.state import LoopState, load_train_state, save_train_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs a task.

    warmup_fraction, lr_floor: the learning rate warms up linearly over that share of all steps, then
    decays on a cosine to ``lr_floor`` times its peak.
    higher_is_better, min_delta: an epoch improves on the best when its metric beats it by more than
    ``min_delta``. patience: epochs without improvement tolerated before stopping (None: never stops).
    clip_grad_norm: the gradient norm is clipped to it (None: not clipped).
    score_start: score the model as given before training; it is kept when no epoch beats it.
    out: the folder of the best checkpoint (written by the task) and of the resumable state; None keeps
    the best weights in memory and puts them back into the model at the end. resume: continue from ``out``.
    """

    epochs: int
    warmup_fraction: float = 0.05
    lr_floor: float = 0.0
    higher_is_better: bool = True
    min_delta: float = 0.0
    patience: int | None = None
    clip_grad_norm: float | None = None
    score_start: bool = False
    out: Path | None = None
    resume: bool = False
    desc: str = "train"
    progress: bool = True


@dataclass
class Step:
    """One global batch: its indices (the same on every rank), this rank's decoded share, the whole batch."""

    indices: np.ndarray
    batch: Batch
    whole: distributed.GlobalBatch
    epoch: int  # from 0
    number: int  # the step within the epoch


class Task(Protocol):
    """What one use of the loop trains."""

    model: torch.nn.Module  # what trains; the loop switches its train/eval mode
    steps_per_epoch: int
    metric_name: str  # for the log line

    def optimizer(self) -> torch.optim.Optimizer: ...

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch`` (from 0); called once at its start, on every rank alike."""

    def decode(self, indices: np.ndarray, epoch: int, step: int) -> Batch:
        """This rank's share of a batch (runs in the prefetch thread)."""

    def loss(self, encode: torch.nn.Module, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step and its parts; ``encode`` runs both towers (DDP-wrapped under torchrun)."""

    def score(self) -> tuple[float, dict | None]:
        """The held-out metric (the same on every rank) and the fields the history records for it."""

    def entry(self, losses: dict[str, float], fields: dict | None) -> dict:
        """An epoch's history fields from its mean training losses and its held-out fields."""

    def save_best(self, out: Path, history: list[dict]) -> None:
        """Write the model as the run's best checkpoint into ``out`` (rank 0 only). Only a task run with an
        output folder (``LoopConfig.out``) needs it."""


def run_loop(task: Task, config: LoopConfig) -> LoopState:
    """Train ``task`` for ``config.epochs`` epochs (or until early stopping); returns where the run ended."""
    optimizer = task.optimizer()
    total = task.steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, int(total * config.warmup_fraction), floor=config.lr_floor)
    )
    state = _start(task, config, optimizer, scheduler)
    best = _BestWeights(task, config)
    encode = distributed.data_parallel(task.model)
    remaining = task.steps_per_epoch * (config.epochs - state.epoch)
    bar = progress_bar(range(remaining), desc=config.desc, total=remaining,
                       enabled=config.progress and distributed.is_main())
    steps = iter(bar)
    while state.epoch < config.epochs and not state.stopped_early:
        started = time.perf_counter()
        losses, seen, taken = _train_epoch(task, config, state, encode, (optimizer, scheduler), (steps, bar))
        train_seconds = time.perf_counter() - started
        task.model.eval()
        metric, fields = task.score()
        state.epoch += 1
        state.epochs_run += 1
        state.history.append({
            "epoch": state.epoch, **task.entry(losses, fields), "steps": taken, "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started, "images_per_second": seen / max(train_seconds, 1e-9),
        })
        _after_epoch(task, config, state, metric, best, (optimizer, scheduler))
        log.info("%s epoch %d/%d: %s; %s %.4f (best %.4f, epoch %d), %.0f s", config.desc, state.epoch,
                 config.epochs, _loss_text(losses), task.metric_name, metric, state.best, state.best_epoch,
                 state.history[-1]["seconds"])
    if hasattr(bar, "close"):
        bar.close()
    best.restore()
    state.skipped_images = int(distributed.all_reduce_sum({"skipped": state.skipped_images})["skipped"])
    distributed.barrier()  # the other ranks leave once rank 0 has written everything
    return state



def _loss_text(losses: dict) -> str:
    """``loss 0.3654 (affinity 0.3165, mimic 0.0489)`` or ``loss (contrastive 3.4902, ce 0.2288)``."""
    parts = ", ".join(f"{name} {value:.4f}" for name, value in losses.items() if name != "loss")
    total = f"loss {losses['loss']:.4f}" if "loss" in losses else "loss"
    return f"{total} ({parts})" if parts else total

def _start(task: Task, config: LoopConfig, optimizer, scheduler) -> LoopState:
    if config.resume:
        state = load_train_state(config.out, task.model, optimizer, scheduler)
        log.info("resuming %s after epoch %d", config.out, state.epoch)
        return state
    state = LoopState()
    if config.score_start:
        task.model.eval()
        state.best, state.initial = task.score()
    return state


def _train_epoch(task: Task, config: LoopConfig, state: LoopState, encode, optim, progress) -> tuple[dict, int, int]:
    """One epoch; returns the item-weighted mean of each loss part, the items trained on and the steps taken."""
    optimizer, scheduler = optim
    steps, bar = progress
    epoch, sums, seen, taken = state.epoch, {}, 0, 0
    batches = task.batches(epoch)
    task.model.train()

    def decode(item):
        number, indices = item
        return task.decode(distributed.shard(indices), epoch, number)

    for (number, indices), batch in prefetched(decode, list(enumerate(batches))):
        next(steps, None)
        state.skipped_images += len(batch.skipped)
        whole = distributed.GlobalBatch(indices, batch.indices)
        if not whole.usable():
            continue
        loss, parts = task.loss(encode, Step(indices, batch, whole, epoch, number))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in task.model.parameters() if p.requires_grad], config.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        seen, taken = seen + len(whole.indices), taken + 1
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * len(whole.indices)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in parts.items()})
    return {k: v / max(1, seen) for k, v in sums.items()}, seen, taken


def _improved(value: float, best: float | None, config: LoopConfig) -> bool:
    if best is None:
        return True
    if config.higher_is_better:
        return value > best + config.min_delta
    return value < best - config.min_delta


def _after_epoch(task: Task, config: LoopConfig, state: LoopState, metric: float, best: "_BestWeights", optim) -> None:
    """Keep the best weights, write the resumable state, and decide on early stopping."""
    if _improved(metric, state.best, config):
        state.best, state.best_epoch, state.bad_epochs = metric, state.epoch, 0
        best.keep(state)
    else:
        state.bad_epochs += 1
        if config.patience is not None and state.bad_epochs > config.patience:
            state.stopped_early = state.epoch < config.epochs
    if config.out is not None and distributed.is_main():
        save_train_state(config.out, task.model, *optim, state)


class _BestWeights:
    """The best epoch's weights: the task's checkpoint in the output folder, or a copy in memory."""

    def __init__(self, task: Task, config: LoopConfig):
        self.task, self.out = task, config.out
        self.weights = self._copy() if self.out is None else None

    def _copy(self) -> dict:
        return {k: v.detach().clone() for k, v in self.task.model.state_dict().items()}

    def keep(self, state: LoopState) -> None:
        if self.out is None:
            self.weights = self._copy()
        elif distributed.is_main():
            self.task.save_best(self.out, state.history)

    def restore(self) -> None:
        if self.weights is not None:
            self.task.model.load_state_dict(self.weights)
