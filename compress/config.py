"""CompressConfig: the resolved recipe of one `vledge compress` run, saved inside every bundle.

Later settings win: defaults < target preset < recipe file (--config) < CLI flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from vledge.compress.distill import DistillConfig
from vledge.compress.prune import PruneConfig
from vledge.compress.quantize import SchemeConfig, config_for_target
from vledge.configs import versioned_fields
from vledge.errors import ConfigError
from vledge.targets import get_target

CONFIG_VERSION = 1

# What a target changes in the defaults. Static-shape targets fix the batch (and the sequence
# length, which comes from the tokenizer).
TARGET_PRESETS: dict[str, dict] = {
    "intel-npu": {"static_batch": 1},
}


@dataclass
class CompressConfig:
    """Everything `vledge compress` needs beyond the teacher and the output folder.

    student: a registered student name (``vledge students``), or None for the teacher's default.
    tolerance: the verify gate: the bundle may lose at most this much zero-shot top-1 (a fraction:
        0.02 is two points) against the teacher on held-out data, else the run fails.
    eval_samples: held-out images used by the gate (None: the whole held-out split).
    prune: structured pruning; ratio 0 skips the stage. recovery: distillation after pruning.
    quantize: the config of the target's quantization scheme (None: its defaults; a dict: its settings).
    static_batch: fixes every input shape (NPU); None keeps the batch dynamic.
    cache_dir: where the teacher's outputs are cached for distillation (None: no cache); see
        vledge.compress.teacher_cache. Reused across stages and runs with the same teacher and data.
    """

    target: str = "cpu"
    student: str | None = None
    data: str = "fashion-mnist"
    data_dir: str | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=lambda: PruneConfig(ratio=0.0))
    recovery: DistillConfig = field(default_factory=lambda: DistillConfig(epochs=2, patience=None, max_samples=10000))
    quantize: SchemeConfig | dict | None = None
    tolerance: float = 0.02
    eval_samples: int | None = None
    static_batch: int | None = None
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self):
        target = get_target(self.target)  # "did you mean" on a bad name
        self.quantize = config_for_target(target.quantization, self.quantize)
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance is a fraction of top-1 in [0, 1) (0.02 = two points), got {self.tolerance!r}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ConfigError(f"eval_samples must be positive or None, got {self.eval_samples!r}")
        if self.static_batch is not None and self.static_batch < 1:
            raise ConfigError(f"static_batch must be positive or None, got {self.static_batch!r}")

    def to_dict(self) -> dict:
        out = {"version": CONFIG_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CompressConfig":
        data = versioned_fields(cls, data, CONFIG_VERSION)
        parsers = {"distill": DistillConfig, "recovery": DistillConfig, "prune": PruneConfig}
        for key, kind in parsers.items():
            if isinstance(data.get(key), dict):
                data[key] = kind.from_dict(data[key])
        return cls(**data)


def resolve_config(target: str, recipe: str | Path | None = None, overrides: dict | None = None) -> CompressConfig:
    """defaults < target preset < recipe file < overrides (CLI flags; None values are ignored)."""
    merged = _deep_merge(CompressConfig(target=target).to_dict(), TARGET_PRESETS.get(target, {}))
    if recipe is not None:
        try:
            from_file = json.loads(Path(recipe).read_text())
        except FileNotFoundError:
            raise ConfigError(f"recipe file not found: {recipe}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"recipe file {recipe} is not valid JSON: {exc}") from None
        from_file.pop("target", None)
        merged = _deep_merge(merged, from_file)
    merged = _deep_merge(merged, {k: v for k, v in (overrides or {}).items() if v is not None})
    return CompressConfig.from_dict(merged)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
