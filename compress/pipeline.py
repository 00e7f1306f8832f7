"""`vledge compress`: the stages in order, each a function usable on its own, gathered into one report.

1. load the teacher (``compress.stages.load_teacher_stage``)
2. distil a student (``compress.stages.distilled_student``; ``--student teacher`` keeps the teacher)
3. prune, then recover by distillation (``compress.prune.pruned_student``), when ``prune.ratio > 0``
4. export both towers to FP32 ONNX, parity checked (``compress.export.export_towers``)
5. quantize them with the target's scheme (``compress.stages.quantized_towers``)
6. verify against the teacher, keeping a drifting tower in FP32 (``compress.verify.verify_with_recovery``);
   the gate loads the ONNX towers with compact names (``compress.export.compact``), the bytes the bundle ships
7. write the bundle atomically (``compress.bundle.package.write_final_bundle``)

This module logs one summary line per stage. Expensive stages (distil, prune) are kept in a work folder
so an interrupted run can ``--resume``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from pathlib import Path

from vledge.compress.config import CompressConfig, resolve_config
from vledge.compress.report import CompressReport, StageRecord
from vledge.compress.workdir import WorkDir, stage_key
from vledge.errors import BundleError, ConfigError, OutputError, VerificationError
from vledge.output import NO_SPACE, check_writable
from vledge.targets import TargetSpec, as_target

log = logging.getLogger(__name__)

__all__ = ["CompressReport", "StageRecord", "compress"]


class _Recorder:
    def __init__(self, report: CompressReport):
        self.report = report

    def add(self, name: str, summary: str, started: float, *, reused: bool = False, details: dict | None = None) -> None:
        details = {k: v for k, v in (details or {}).items() if k not in ("summary", "key")}
        summary = summary.removeprefix(f"{name}: ")  # a stage report that names itself is named once
        record = StageRecord(name, summary, round(time.perf_counter() - started, 1), reused, details)
        self.report.stages.append(record)
        log.info("%s: %s%s", name, summary, " (resumed)" if reused else "")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")


def _check_labels(labels) -> None:
    """The labels to compile, checked before hours of work rather than when the bundle is written."""
    if labels is None:
        return
    if isinstance(labels, str) or not labels or not all(isinstance(label, str) and label for label in labels):
        raise ConfigError("labels to compile must be a non-empty list of non-empty strings, e.g. ['cat', 'dog']")
    repeated = sorted(label for label, n in Counter(labels).items() if n > 1)
    if repeated:
        names = ", ".join(map(repr, repeated))
        raise ConfigError(f"labels to compile name {names} more than once; list each label once")


def _held_out(config: CompressConfig):
    """Training data for distillation and calibration, and held-out data for the gate."""
    from vledge.data import DATASETS, load_dataset
    from vledge.data.base import split

    train = load_dataset(config.data, "train", config.data_dir)
    if config.data in DATASETS:
        return train, load_dataset(config.data, "test", config.data_dir)
    return split(train, 0.1, config.seed)


def compress(
    teacher: str | Path,
    *,
    out: str | Path,
    target: TargetSpec | str | None = None,
    config: CompressConfig | None = None,
    adapter: str | Path | None = None,
    labels: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    work_dir: str | Path | None = None,
    keep_work: bool = False,
    allow_pickle: bool = False,
) -> CompressReport:
    """Compress the joint model at ``teacher`` into a verified bundle at ``out`` for ``target``.

    ``config`` (from ``resolve_config``) carries its own target; ``target`` alone resolves the defaults
    for it (default "cpu"); both together must name the same target, else ``ConfigError``.
    Raises ``VerificationError`` (with the report) when the bundle loses more than the tolerance
    against the teacher even after keeping the offending tower in higher precision, and
    ``OutputError`` when ``out`` or the work folder cannot be written (checked before any work) or
    the disk fills up (finished stages stay in the work folder for ``resume``). ``allow_pickle``
    lets a teacher with only pickle weights load through ``torch.load(weights_only=True)``.
    """
    from vledge.train import distributed

    config = _config_for(target, config)
    out = Path(out)
    if distributed.init_from_env() and not distributed.is_main():
        return _run_stages(teacher, out, config, adapter, labels, overwrite, None, allow_pickle)
    _check_out(out, overwrite)
    _check_labels(labels)
    check_writable(out.parent, "--out")
    work = _open_work(Path(work_dir or f"{out}.work"), resume, overwrite)
    passed = False
    try:
        report = _run_stages(teacher, out, config, adapter, labels, overwrite, work, allow_pickle)
        passed = report.passed
    except OSError as exc:
        if isinstance(exc, OutputError) or exc.errno not in NO_SPACE:
            raise
        where = exc.filename2 or exc.filename or work.root
        raise OutputError(
            f"cannot write {where} ({exc.strerror}); finished stages are kept in {work.root}: free some space "
            "(or choose --out and --work-dir on another disk) and run again with --resume"
        ) from None
    finally:
        if not passed:  # failed: the stages stay for --resume, the lock goes
            work.close()
        if distributed.is_distributed():
            distributed.broadcast_flag(passed)  # the other ranks wait for rank 0's outcome (see _run_stages)
    if keep_work:
        work.close()
    else:
        work.remove()  # while still locked: never another run's folder
    return report


def _open_work(root: Path, resume: bool, overwrite: bool) -> WorkDir:
    """The run's locked work folder: an earlier run's stages kept for ``resume``, cleared for ``overwrite``."""
    work = WorkDir(check_writable(root, "--work-dir"))
    if not resume and not work.is_empty():
        if not overwrite:
            work.close()
            raise ConfigError(
                f"work folder {work.root} holds an earlier run: pass --resume to continue it or --overwrite to start over"
            )
        work.clear()
    return work


def _config_for(target: TargetSpec | str | None, config: CompressConfig | None) -> CompressConfig:
    if config is None:
        return resolve_config(target or "cpu")
    if target is not None and as_target(target).name != config.target.name:
        raise ConfigError(
            f"compress got target {as_target(target).name!r} and a config for target {config.target.name!r}: "
            "pass the config alone (its target is used), or resolve_config(target, ...) for the target you mean"
        )
    return config


def _teacher_offer(teacher, train_data, held_out, config: CompressConfig, work: WorkDir, verified, report) -> str:
    """For a distilled student that failed the gate: what the quantized teacher gives, measured (or why not)."""
    from vledge.compress.students import TEACHER
    from vledge.compress.verify.teacher_offer import describe, measure_quantized_teacher

    if config.student == TEACHER:
        return ""
    try:
        offer = measure_quantized_teacher(teacher, train_data, held_out, config, work, verified.report, verified.edge)
    except Exception as exc:  # the gate's own error must still reach the user
        log.warning("could not measure the quantized teacher: %s: %s", type(exc).__name__, exc)
        return " (The teacher itself could not be quantized for comparison; see the log.)"
    report.metrics["quantized_teacher"] = offer
    return " " + describe(offer, config.target.name)


def _student_stages(teacher, config: CompressConfig, adapter, allow_pickle: bool, work: WorkDir | None, rec: _Recorder):
    """Stages 1-3: the teacher, its distilled (and pruned) student, and the data both are measured on."""
    from vledge.compress import stages
    from vledge.compress.prune import pruned_student
    from vledge.models.identity import describe_model

    t = time.perf_counter()
    teacher_model, teacher_id = stages.load_teacher_stage(teacher, adapter, allow_pickle)
    rec.add("load", describe_model(teacher_model, "teacher") + f", sha256 {teacher_id[:12]}", t)
    train_data, held_out = _held_out(config)

    t = time.perf_counter()
    key = stage_key(teacher_id, config.data, config.student, config.distill.to_dict(), config.seed)
    student, record, reused = stages.distilled_student(
        teacher_model, train_data, config.distill, student=config.student, seed=config.seed,
        cache_dir=config.cache_dir, work=work, key=key, teacher_id=teacher_id)
    rec.add("distill", record["summary"], t, reused=reused, details=record)

    if config.prune.ratio > 0:
        if student is teacher_model:  # pruning works in place, and the gate still needs the teacher as it was
            student = copy.deepcopy(student)
        t = time.perf_counter()
        key = stage_key(key, config.prune.to_dict(), config.recovery.to_dict())
        student, record, reused = pruned_student(student, teacher_model, train_data, config.prune, config.recovery,
                                                 cache_dir=config.cache_dir, work=work, key=key, teacher_id=teacher_id)
        rec.add("prune", record["summary"], t, reused=reused, details=record)
    return teacher_model, teacher_id, student, train_data, held_out


def _edge_stages(teacher_model, student, train_data, held_out, config: CompressConfig, work: WorkDir, rec: _Recorder):
    """Stages 4-6: export, quantize and verify; returns the gate's ``Verified``."""
    from vledge.compress import stages
    from vledge.compress.export import export_towers
    from vledge.compress.verify.gate import verify_with_recovery

    t = time.perf_counter()
    exported = export_towers(student, held_out, work.start("export"), config.export_config())
    rec.add("export", exported.summary, t, details={"parity": exported.parity})

    t = time.perf_counter()
    quantized = stages.quantized_towers(student, train_data, exported, work.start("quantize"), config.quantize,
                                        config.seed)
    rec.add("quantize", quantized.summary, t, details={"towers": {k: s.quantization for k, (s, _) in quantized.towers.items()}})

    t = time.perf_counter()
    verified = verify_with_recovery(teacher_model, student, held_out, exported, quantized.towers, work, config.target,
                                    config.gate_config())
    rec.add("verify", verified.report.summary(), t, details={"recovered": verified.recovered,
                                                             "compacted": verified.compacted})
    return verified


def _run_stages(teacher, out: Path, config: CompressConfig, adapter, labels, overwrite: bool, work: WorkDir | None,
                allow_pickle: bool) -> CompressReport:
    """All stages on rank 0 (or in a single process); under torchrun the other ranks (``work`` None) help
    distil, then wait for rank 0 to export, verify and write the bundle."""
    from vledge.compress.bundle.package import size_metrics, write_final_bundle
    from vledge.train import distributed

    report = CompressReport(target=config.target.name, out=None, passed=False)
    rec = _Recorder(report)
    teacher_model, teacher_id, student, train_data, held_out = _student_stages(teacher, config, adapter, allow_pickle,
                                                                                work, rec)
    if work is None:
        report.passed = distributed.broadcast_flag(False)  # rank 0's outcome
        return report
    verified = _edge_stages(teacher_model, student, train_data, held_out, config, work, rec)
    report.metrics = {**verified.report.to_dict(), "recovered": verified.recovered, "compacted": verified.compacted,
                      **size_metrics(teacher, teacher_model, student, verified.towers)}
    if not verified.report.passed:
        raise VerificationError(
            f"the compressed model loses {verified.report.drop * 100:.2f} points of {verified.report.metric} against "
            f"the teacher (tolerance {config.tolerance * 100:.2f}); work kept in {work.root}. Try a larger "
            "--student, more distillation epochs, or a higher --tolerance."
            + _teacher_offer(teacher_model, train_data, held_out, config, work, verified, report),
            report=report,
        )

    t = time.perf_counter()
    write_final_bundle(out, teacher_model, student, verified, target=config.target, recipe=config.to_dict(),
                       metrics=report.metrics, teacher_id=teacher_id, labels=labels, held_out=held_out,
                       overwrite=overwrite)
    rec.add("bundle", f"{out} ({report.metrics['bundle_bytes'] / 1e6:.2f} MB)", t)
    report.out, report.passed = str(out), True
    return report
