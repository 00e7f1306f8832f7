"""CompressConfig: the resolved recipe of one `vledge compress` run, saved inside every bundle.

Later settings win: defaults < target (``TargetSpec.settings()``) < recipe file (--config) < CLI flags.
The target is looked up once, where the config is made: ``CompressConfig.target`` is its row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from vledge.compress.distil.config import DistillConfig
from vledge.compress.export.stage import ExportConfig
from vledge.compress.prune.config import PruneConfig
from vledge.compress.quantize import SchemeConfig, config_for_target
from vledge.compress.verify.config import GateConfig
from vledge.configs import versioned_fields
from vledge.errors import ConfigError
from vledge.targets import TargetSpec, as_target

CONFIG_VERSION = 1


@dataclass
class CompressConfig:
    """Everything `vledge compress` needs beyond the teacher and the output folder.

    target: the target's row (given by name, it is looked up here; JSON holds the name).
    student: a registered student name (``vledge students``), or None for the teacher's default.
    tolerance: the verify gate: the bundle may lose at most this much zero-shot top-1 (a fraction:
        0.02 is two points) against the teacher on held-out data, else the run fails.
    eval_samples: held-out images used by the gate (None: the whole held-out split).
    prune: structured pruning; ratio 0 skips the stage. recovery: distillation after pruning.
    quantize: the config of the target's quantization scheme (None: its defaults; a dict: its settings).
    static_batch: the fixed batch of a static-shape target (its own by default); ignored by dynamic targets.
    cache_dir: where the teacher's outputs are cached for distillation (None: no cache); see
        vledge.compress.distil.cache. Reused across stages and runs with the same teacher and data.
    """

    target: TargetSpec | str = "cpu"
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
        self.target = as_target(self.target)  # "did you mean" on a bad name
        self.quantize = config_for_target(self.target.quantization, self.quantize)
        if self.static_batch is not None and self.static_batch < 1:
            raise ConfigError(f"static_batch must be positive or None, got {self.static_batch!r}")
        self.gate_config()  # checks tolerance and eval_samples

    def export_config(self) -> ExportConfig:
        """Stage 4's settings: the target's format and shapes."""
        return ExportConfig.for_target(self.target, self.static_batch)

    def gate_config(self) -> GateConfig:
        """Stage 6's settings."""
        return GateConfig(tolerance=self.tolerance, eval_samples=self.eval_samples)

    def to_dict(self) -> dict:
        out = {"version": CONFIG_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TargetSpec):
                value = value.name
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


def resolve_config(target: TargetSpec | str, recipe: str | Path | None = None, overrides: dict | None = None) -> CompressConfig:
    """defaults < target < recipe file < overrides (CLI flags; None values are ignored). A recipe's own
    ``target`` is ignored: the target is chosen by ``target`` alone."""
    spec = as_target(target)
    merged = _deep_merge(CompressConfig(target=spec).to_dict(), spec.settings())
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
    merged["target"] = spec
    return CompressConfig.from_dict(merged)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
