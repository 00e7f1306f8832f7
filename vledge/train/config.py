"""TrainConfig: one validated dataclass for `vledge train`, round-tripping through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vledge.configs import versioned_fields
from vledge.errors import ConfigError

CONFIG_VERSION = 1
DEFAULT_EPOCHS = 3

DEMO_IMAGE_TOWER = {"arch": "resnet18", "stem": "small"}
DEMO_TEXT_TOWER = {"arch": "bert", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024}


@dataclass
class TrainConfig:
    """Joint training of a dual encoder: ``L = L_ce + λ·L_contrastive``.

    The defaults are the Fashion-MNIST demo teacher (resnet18 + 4-layer BERT), sized to train in
    under ten minutes on two CPU cores. ``epochs`` None (the default) trains ``DEFAULT_EPOCHS`` epochs of
    at least ``min_steps`` optimiser steps in all: an epoch on a small data set makes several shuffled
    passes over it. An explicit ``epochs`` runs exactly that many single passes.
    """

    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_tower: dict = field(default_factory=lambda: dict(DEMO_IMAGE_TOWER))
    text_tower: dict = field(default_factory=lambda: dict(DEMO_TEXT_TOWER))
    embed_dim: int = 256
    image_size: int = 28
    mean: tuple[float, float, float] | None = None  # None: the data set's own statistics
    std: tuple[float, float, float] | None = None
    vocab_size: int = 2000
    max_length: int = 32
    epochs: int | None = None
    min_steps: int = 300
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    contrastive_weight: float = 0.5  # λ
    val_fraction: float = 0.05
    max_samples: int | None = None  # cap on training images (quick runs)
    seed: int = 0
    num_threads: int | None = None
    strict_images: bool = False
    lora: dict | None = None  # {"r": 8, "alpha": 16} fine-tunes an existing teacher with adapters

    def __post_init__(self):
        checks = [
            (self.epochs is None or self.epochs >= 1, "epochs must be at least 1 (or None: enough for min_steps)"),
            (self.min_steps >= 0, "min_steps must be non-negative"),
            (self.batch_size >= 2, "batch_size must be at least 2 (the contrastive loss needs negatives)"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
            (self.contrastive_weight >= 0, "contrastive_weight must be non-negative"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (self.embed_dim >= 2, "embed_dim must be at least 2"),
            (self.image_size >= 8, "image_size must be at least 8"),
            (self.max_length >= 4, "max_length must be at least 4"),
            (self.max_samples is None or self.max_samples >= self.batch_size, "max_samples must be at least batch_size"),
            ("arch" in self.image_tower and "arch" in self.text_tower, "image_tower and text_tower need an 'arch'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid training config: {message}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(v) for v in value))

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return cls(**versioned_fields(cls, data, CONFIG_VERSION))

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
