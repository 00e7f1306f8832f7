"""Stage 3 of ``vledge compress``: structured pruning that physically shrinks both towers.

``prune_(model, PruneConfig(ratio=0.5))`` removes conv channels from CNN image towers
(torch-pruning), attention heads and MLP width from transformer towers, records the new shapes in
each tower's ``config`` (see :mod:`vledge.models.prune_shapes`) and returns a :class:`PruneReport`.
Recovery distillation is the pipeline's next step, not this one's (``compress.prune.stage``).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from vledge.compress.prune.cnn import is_cnn, prune_conv_channels_
from vledge.compress.prune.config import CRITERIA, PruneConfig
from vledge.compress.prune.text import prune_attention_heads_, prune_mlp_width_
from vledge.models.prune_shapes import module_shapes, param_shapes, record_pruned_

log = logging.getLogger(__name__)


@dataclass
class TowerPruneResult:
    """One tower: parameters before and after, each changed module's [old, new] shape, heads removed."""

    params_before: int
    params_after: int
    changed: dict[str, list[dict]] = field(default_factory=dict)
    heads_removed: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # parts that could not apply here, and why


@dataclass
class PruneReport:
    config: dict
    params_before: int
    params_after: int
    towers: dict[str, TowerPruneResult]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        towers = ", ".join(f"{k} {_m(t.params_before)} -> {_m(t.params_after)}" for k, t in self.towers.items())
        return (
            f"prune: ratio {self.config['ratio']:.2f}, params {_m(self.params_before)} -> {_m(self.params_after)} "
            f"({towers}) in {self.seconds:.1f} s"
        )


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def prune_(model, config: PruneConfig) -> PruneReport:
    """Prune ``model``'s towers in place; record the new structure in each tower's ``config``.

    Forward shapes (the embedding width) never change. Reload a saved pruned model with a loader
    that calls :func:`apply_pruned_shapes_` before loading weights.
    """
    start = time.perf_counter()
    before = count_params(model)
    names = [n for n, _ in model.named_modules()]
    for pattern in config.ignored:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            log.warning("prune: ignored pattern %r matches no module of the model", pattern)
    towers = {}
    for kind in ("image", "text"):
        tower = getattr(model, f"{kind}_tower")
        ignored = _ignored_under(f"{kind}_tower", config.ignored)
        towers[kind] = _prune_tower_(tower, config, ignored, model.preprocess.image_size)
    report = PruneReport(config.to_dict(), before, count_params(model), towers, time.perf_counter() - start)
    log.info(report.summary())
    return report


def _ignored_under(prefix: str, patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Is a tower-relative module name, or one of its parents, matched by a pattern over model names?"""

    def ignored(name: str) -> bool:
        parts = f"{prefix}.{name}".split(".") if name else [prefix]
        return any(fnmatch.fnmatchcase(".".join(parts[:i]), p) for i in range(1, len(parts) + 1) for p in patterns)

    return ignored


def _prune_tower_(tower, config: PruneConfig, ignored: Callable[[str], bool], image_size: int) -> TowerPruneResult:
    result = TowerPruneResult(count_params(tower), count_params(tower))
    if config.ratio == 0 or ignored(""):
        return result
    shapes, params = module_shapes(tower), param_shapes(tower)
    norm = CRITERIA[config.criterion]
    if is_cnn(tower):
        if "conv_channels" in config.parts:
            example = torch.zeros(1, 3, image_size, image_size, device=next(tower.parameters()).device)
            layers = [m for n, m in tower.named_modules() if n and ignored(n)]
            prune_conv_channels_(
                tower, example, ratio=config.ratio, norm=norm, round_to=config.round_to, ignored=layers
            )
    else:
        if "attention_heads" in config.parts:
            result.heads_removed, result.skipped = prune_attention_heads_(
                tower, ratio=config.ratio, norm=norm, ignored=ignored
            )
        if "mlp_width" in config.parts:
            prune_mlp_width_(tower, ratio=config.ratio, norm=norm, round_to=config.round_to, ignored=ignored)
    result.changed = record_pruned_(tower, shapes, params, result.heads_removed)
    result.params_after = count_params(tower)
    return result
