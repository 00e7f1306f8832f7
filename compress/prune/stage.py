"""Stage 3 as the pipeline runs it: prune structurally, then a short recovery distillation; the pruned
student is kept in the work folder and reused on ``--resume`` like the distilled one."""

from __future__ import annotations

from vledge.compress.prune.config import PruneConfig
from vledge.compress.prune.structured import prune_
from vledge.compress.workdir import WorkDir


def pruned_student(student, teacher, train_data, config: PruneConfig, recovery, *, cache_dir: str | None = None,
                   work: WorkDir | None = None, key: str = "", teacher_id: str | None = None):
    """Prune ``student`` in place with ``config``, recover it by distillation from ``teacher`` with
    ``recovery`` (a ``DistillConfig``); returns (student, record, reused)."""
    from vledge.compress.stages import distill_with_cache, finished_stage, save_finished_stage
    from vledge.models import load_dual_encoder
    from vledge.train import distributed

    done = finished_stage(work, "prune", key)
    if done is not None:
        return (load_dual_encoder(work.path("prune") / "model") if distributed.is_main() else student), done, True
    pruned = prune_(student, config)
    report, cached = distill_with_cache(student, teacher, train_data, recovery, cache_dir, teacher_id)
    record = {"summary": f"{pruned.summary()}; recovery: {report.summary()}{cached}", "prune": pruned.to_dict(),
              "recovery": report.to_dict()}
    save_finished_stage(work, "prune", key, student, record)
    return student, record, False
