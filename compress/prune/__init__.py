"""Stage 3, prune: structured pruning of both towers (conv channels, attention heads, MLP width), with
``pruned_student`` adding the recovery distillation and resume the pipeline runs."""

from vledge.compress.prune.config import CRITERIA, PARTS, PruneConfig
from vledge.compress.prune.stage import pruned_student
from vledge.compress.prune.structured import PruneReport, TowerPruneResult, count_params, prune_
from vledge.models.prune_shapes import apply_pruned_shapes_

__all__ = ["CRITERIA", "PARTS", "PruneConfig", "PruneReport", "TowerPruneResult", "apply_pruned_shapes_", "count_params",
           "prune_", "pruned_student"]
