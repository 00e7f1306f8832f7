"""GateConfig: how much the verify gate (stage 6) lets a bundle lose against its teacher."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vledge.errors import ConfigError


@dataclass(frozen=True)
class GateConfig:
    """tolerance: the bundle may lose at most this much of the gate metric (zero-shot top-1, or image->text
    recall@1 without labels; a fraction: 0.02 is two points) against the teacher on held-out data.
    eval_samples: held-out images the gate uses (None: the whole held-out split)."""

    tolerance: float = 0.02
    eval_samples: int | None = None

    def __post_init__(self):
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance is a fraction of top-1 in [0, 1) (0.02 = two points), got {self.tolerance!r}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ConfigError(f"eval_samples must be positive or None, got {self.eval_samples!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GateConfig":
        return cls(**data)
