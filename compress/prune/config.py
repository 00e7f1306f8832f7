"""PruneConfig: what structured pruning removes, and how much (stage 3 of ``vledge compress``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from vledge.configs import versioned_fields
from vledge.errors import ConfigError
from vledge.registry import did_you_mean

PARTS = ("conv_channels", "attention_heads", "mlp_width")
CRITERIA = {"l2": 2, "l1": 1}  # name -> p of the Lp-norm magnitude importance
CONFIG_VERSION = 1


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how much.

    ratio: fraction of each prunable width removed (conv output channels, heads per layer, MLP hidden
        units), 0 <= ratio < 1; 0 changes nothing.
    parts: any of "conv_channels", "attention_heads", "mlp_width".
    criterion: "l2" (default) or "l1": magnitude (Lp-norm) of the weights a channel, head or unit owns.
    ignored: fnmatch patterns over module names of the DualEncoder ("image_tower.backbone.layer4*",
        "text_tower"); a module is left whole when its name or a parent's name matches.
    round_to: kept channel / hidden-unit counts are multiples of this (8 suits INT8 kernels); a
        width too narrow for that stays whole. Heads are not rounded.
    """

    ratio: float = 0.3
    parts: tuple[str, ...] = PARTS
    criterion: str = "l2"
    ignored: tuple[str, ...] = ()
    round_to: int = 8

    def __post_init__(self):
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 <= ratio < 1:
            raise ConfigError(
                f"PruneConfig.ratio must be a number with 0 <= ratio < 1 (the fraction of each width removed), got {ratio!r}"
            )
        parts = (self.parts,) if isinstance(self.parts, str) else tuple(self.parts)
        for part in parts:
            if part not in PARTS:
                raise ConfigError(f"PruneConfig.parts: unknown part {part!r}.{did_you_mean(part, PARTS)} Known: {', '.join(PARTS)}")
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"PruneConfig.criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}."
                f"{did_you_mean(str(self.criterion), CRITERIA)}"
            )
        ignored = (self.ignored,) if isinstance(self.ignored, str) else tuple(self.ignored)
        if not all(isinstance(p, str) and p for p in ignored):
            raise ConfigError(f"PruneConfig.ignored must be non-empty module-name patterns, got {list(ignored)!r}")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ConfigError(f"PruneConfig.round_to must be a positive integer (1: no rounding), got {self.round_to!r}")
        object.__setattr__(self, "ratio", float(ratio))
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "ignored", ignored)

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self), "parts": list(self.parts), "ignored": list(self.ignored)}

    @classmethod
    def from_dict(cls, data: dict) -> "PruneConfig":
        return cls(**versioned_fields(cls, data, CONFIG_VERSION))
