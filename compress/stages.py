"""Stages 1, 2 and 5 as the pipeline runs them, around the algorithms of other rooms: loading the teacher
(``vledge.models``), the distilled student (``compress.distil``, reused on ``--resume``) and the quantized
towers (``compress.quantize``). Each is a function of a model and its own settings, usable alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vledge.bundle import TowerSpec
from vledge.compress.export.stage import KINDS, Exported, tower_files
from vledge.compress.workdir import WorkDir
from vledge.models.identity import describe_model, model_fingerprint

log = logging.getLogger(__name__)


def load_teacher_stage(teacher, adapter=None, allow_pickle: bool = False):
    """Stage 1: the teacher any source ``load_teacher`` reads, and its identity (``model_fingerprint``)."""
    from vledge.models import load_teacher

    model = load_teacher(teacher, adapter=adapter, allow_pickle=allow_pickle)
    return model, model_fingerprint(model)


def finished_stage(work: WorkDir | None, stage: str, key: str) -> dict | None:
    """The record of a finished stage, as the main process finds it; the other ranks get {} or None."""
    from vledge.train import distributed

    record = work.finished(stage, key) if work is not None and distributed.is_main() else None
    return (record or {}) if distributed.broadcast_flag(record is not None) else None


def save_finished_stage(work: WorkDir | None, stage: str, key: str, model, record: dict) -> None:
    """The main process keeps a finished stage's model and record for ``--resume``; the other ranks write nothing."""
    from vledge.models import save_dual_encoder
    from vledge.train import distributed

    if distributed.is_main():
        folder = work.start(stage)
        save_dual_encoder(model, folder / "model")
        work.finish(stage, key, record)


def teacher_cache_for(teacher, data, student, distill_config, cache_dir: str | None, teacher_id: str | None = None):
    """The teacher's outputs for one distillation, from ``cache_dir`` and filled ahead; None without one."""
    if not cache_dir:
        return None
    from vledge.compress.distil import TeacherCache, split_indices

    cache = TeacherCache(cache_dir, teacher, data, spec=student.preprocess, teacher_id=teacher_id,
                         batch_size=distill_config.batch_size)
    cache.build(np.concatenate(split_indices(len(data), distill_config)))
    return cache


def distill_with_cache(student, teacher, data, distill_config, cache_dir: str | None, teacher_id: str | None):
    """``distill`` with the teacher's outputs from ``cache_dir`` when given; the report and a cache note."""
    from vledge.compress.distil import distill

    cache = teacher_cache_for(teacher, data, student, distill_config, cache_dir, teacher_id)
    report = distill(student, teacher, data, distill_config, teacher_forward=cache)
    if cache is None:
        return report, ""
    cache.close()
    return report, f"; teacher cache: {cache.stats.summary()}"


def distilled_student(teacher, train_data, distill_config, *, student: str | None = None, seed: int = 0,
                      cache_dir: str | None = None, work: WorkDir | None = None, key: str = "",
                      teacher_id: str | None = None):
    """Stage 2: build the student (``student`` names it; None: the teacher's default) and distil it, or
    reuse the one a previous run finished with the same ``key`` in ``work``. Returns (student, record, reused).

    ``student="teacher"`` returns the teacher itself (no training). Under torchrun every rank distils;
    only the main one (``work`` is None on the others) writes.
    """
    from vledge.compress.students import TEACHER, build_student, default_student
    from vledge.models import load_dual_encoder
    from vledge.train import distributed

    name = student or default_student(teacher)
    if name == TEACHER:
        return teacher, {"summary": f"student teacher ({describe_model(teacher)}): its own towers, no distillation",
                         "student": TEACHER}, False
    done = finished_stage(work, "distill", key)
    if done is not None:
        main = distributed.is_main()
        model = load_dual_encoder(work.path("distill") / "model") if main else build_student(name, teacher, seed=seed)
        distributed.broadcast_module(model)  # a later recovery distillation needs it on every rank
        return model, done, True
    model = build_student(name, teacher, seed=seed)
    report, cached = distill_with_cache(model, teacher, train_data, distill_config, cache_dir, teacher_id)
    summary = report.summary().removeprefix("distil: ")
    record = {"summary": f"student {name} ({describe_model(model)}): {summary}{cached}", "student": name,
              "report": report.to_dict()}
    save_finished_stage(work, "distill", key, model, record)
    return model, record, False


@dataclass
class Quantized:
    towers: dict[str, tuple[TowerSpec, list[Path]]]
    summary: str


def quantized_towers(model, train_data, exported: Exported, folder: Path, config, seed: int = 0) -> Quantized:
    """Stage 5: both exported towers quantized with ``config`` (the target scheme's config, e.g. an
    ``OrtCpuConfig``), calibrated on ``train_data``."""
    from vledge.compress.quantize import CalibrationData, quantize

    calibration = CalibrationData.from_dataset(model, train_data, n=config.calibration_samples, seed=seed)
    towers = {}
    for kind in KINDS:
        spec = quantize(exported.paths[kind], kind, config, calibration, folder)
        towers[kind] = (spec, tower_files(folder, spec))
    methods = ", ".join(f"{k} {s.precision} {s.quantization.get('method', '')}".rstrip() for k, (s, _) in towers.items())
    return Quantized(towers, f"{config.scheme}: {methods}")
