"""DistillConfig: the distil stage's settings, validated on creation and round-tripping through JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from vledge.configs import versioned_fields
from vledge.errors import ConfigError
from vledge.registry import did_you_mean

CONFIG_VERSION = 1
DEFAULT_EPOCHS = 8
MONITORS = ("loss", "agreement")


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings.

    epochs: None (the default) runs ``DEFAULT_EPOCHS`` epochs of at least ``min_steps`` optimiser steps in
        all (an epoch on a small data set makes several shuffled passes over it); a number runs exactly that
        many single passes.
    batch_size, lr, weight_decay, warmup_fraction: AdamW with linear warm-up then cosine decay.
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

    epochs: int | None = None
    min_steps: int = 300
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
        for name, ok, requirement in self._checks():
            if not ok:
                raise ConfigError(f"invalid DistillConfig: {name} {requirement}, got {getattr(self, name)!r}")
        if self.monitor not in MONITORS:
            raise ConfigError(
                f"invalid DistillConfig: monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}."
                f"{did_you_mean(str(self.monitor), MONITORS)}"
            )

    def _checks(self) -> list[tuple[str, bool, str]]:
        def count(v, least):
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def at_least_zero(v):
            return number(v) and v >= 0

        weights = (self.affinity_weight, self.mimic_weight, self.contrastive_weight)
        return [
            ("epochs", self.epochs is None or count(self.epochs, 1), "must be None or an integer >= 1"),
            ("min_steps", count(self.min_steps, 0), "must be an integer >= 0"),
            ("batch_size", count(self.batch_size, 2), "must be an integer >= 2 (in-batch losses need pairs)"),
            ("lr", number(self.lr) and self.lr > 0, "must be a positive number"),
            ("weight_decay", at_least_zero(self.weight_decay), "must be >= 0"),
            ("warmup_fraction", number(self.warmup_fraction) and 0 <= self.warmup_fraction < 1, "must be in [0, 1)"),
            ("temperature", number(self.temperature) and self.temperature > 0, "must be a positive number"),
            ("affinity_weight", at_least_zero(self.affinity_weight), "must be >= 0"),
            ("mimic_weight", at_least_zero(self.mimic_weight), "must be >= 0"),
            ("contrastive_weight", at_least_zero(self.contrastive_weight), "must be >= 0"),
            ("mimic_weight", not all(map(number, weights)) or self.affinity_weight + self.mimic_weight > 0,
             "or affinity_weight must be positive, else nothing is distilled"),
            ("val_fraction", number(self.val_fraction) and 0 < self.val_fraction < 1, "must be in (0, 1)"),
            ("patience", self.patience is None or count(self.patience, 0), "must be None or an integer >= 0"),
            ("min_delta", at_least_zero(self.min_delta), "must be >= 0"),
            ("max_samples", self.max_samples is None or count(self.max_samples, 2), "must be None or an integer >= 2"),
            ("seed", count(self.seed, 0), "must be an integer >= 0"),
            ("num_threads", self.num_threads is None or count(self.num_threads, 1), "must be None or an integer >= 1"),
        ]

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        return cls(**versioned_fields(cls, data, CONFIG_VERSION))
