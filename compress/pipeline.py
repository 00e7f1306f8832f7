"""`vledge compress`: teacher -> student -> distil -> prune -> export -> quantize -> verify -> bundle.

Each stage is a function usable on its own; this module runs them in order, logs one summary line
per stage and gathers one report. Expensive stages (distil, prune) are kept in a work folder so an
interrupted run can `--resume`; the bundle itself is written atomically.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vledge.compress.config import CompressConfig, resolve_config
from vledge.compress.workdir import WorkDir, stage_key
from vledge.errors import BundleError, ConfigError, OutputError, VerificationError
from vledge.output import NO_SPACE, check_writable

log = logging.getLogger(__name__)


@dataclass
class StageRecord:
    name: str
    summary: str
    seconds: float
    reused: bool = False
    details: dict = field(default_factory=dict)


@dataclass
class CompressReport:
    target: str
    out: str | None
    passed: bool
    stages: list[StageRecord] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{s.name:<9} {s.seconds:7.1f} s{' (resumed)' if s.reused else ''}  {s.summary}" for s in self.stages]
        return "\n".join(lines)

    def headline(self) -> str:
        from vledge.compress.verify import metric_value

        m = self.metrics
        metric = m["metric"]

        def value(side: dict) -> float:
            return metric_value(side, metric)

        return (
            f"{metric}: teacher {value(m['teacher']):.4f} -> bundle {value(m['bundle']):.4f} "
            f"({value(m['bundle']) / max(value(m['teacher']), 1e-12) * 100:.1f}% kept); "
            f"params {m['teacher_params'] / 1e6:.2f}M -> {m['student_params'] / 1e6:.2f}M ({m['param_ratio']}x); "
            f"size {m['teacher_bytes'] / 1e6:.1f} MB -> {m['bundle_bytes'] / 1e6:.2f} MB ({m['size_ratio']}x)"
        )


class _Recorder:
    def __init__(self, report: CompressReport):
        self.report = report

    def add(self, name: str, summary: str, started: float, *, reused: bool = False, details: dict | None = None) -> None:
        details = {k: v for k, v in (details or {}).items() if k not in ("summary", "key")}
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
    target: str = "cpu",
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

    Raises ``VerificationError`` (with the report) when the bundle loses more than the tolerance
    against the teacher even after keeping the offending tower in higher precision, and
    ``OutputError`` when ``out`` or the work folder cannot be written (checked before any work) or
    the disk fills up (finished stages stay in the work folder for ``resume``). ``allow_pickle``
    lets a teacher with only pickle weights load through ``torch.load(weights_only=True)``.
    """
    from vledge.train import distributed

    config = config or resolve_config(target)
    out = Path(out)
    if distributed.init_from_env() and not distributed.is_main():
        return _run_stages(teacher, out, config, adapter, labels, overwrite, None, allow_pickle)
    _check_out(out, overwrite)
    _check_labels(labels)
    check_writable(out.parent, "--out")
    work = WorkDir(check_writable(Path(work_dir or f"{out}.work"), "--work-dir"))
    if not resume and not work.is_empty():
        if not overwrite:
            work.close()
            raise ConfigError(
                f"work folder {work.root} holds an earlier run: pass --resume to continue it or --overwrite to start over"
            )
        work.clear()
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


def _teacher_offer(teacher, train_data, held_out, config: CompressConfig, work: WorkDir, verified, report) -> str:
    """For a distilled student that failed the gate: what the quantized teacher gives, measured (or why not)."""
    from vledge.compress.students import TEACHER
    from vledge.compress.teacher_offer import describe, measure_quantized_teacher

    if config.student == TEACHER:
        return ""
    try:
        offer = measure_quantized_teacher(teacher, train_data, held_out, config, work, verified.report, verified.edge)
    except Exception as exc:  # the gate's own error must still reach the user
        log.warning("could not measure the quantized teacher: %s: %s", type(exc).__name__, exc)
        return " (The teacher itself could not be quantized for comparison; see the log.)"
    report.metrics["quantized_teacher"] = offer
    return " " + describe(offer, config.target)


def _run_stages(teacher, out: Path, config: CompressConfig, adapter, labels, overwrite: bool, work: WorkDir | None,
                allow_pickle: bool) -> CompressReport:
    """All stages on rank 0 (or in a single process); under torchrun the other ranks (``work`` None) help
    distil, then wait for rank 0 to export, verify and write the bundle."""
    from vledge.compress import stages
    from vledge.compress.gate import verify_with_recovery
    from vledge.compress.package import size_metrics, write_final_bundle
    from vledge.train import distributed

    report = CompressReport(target=config.target, out=None, passed=False)
    rec = _Recorder(report)

    t = time.perf_counter()
    teacher_model, teacher_id = stages.load_teacher_stage(teacher, adapter, allow_pickle)
    rec.add("load", stages.describe_model(teacher_model, "teacher") + f", sha256 {teacher_id[:12]}", t)
    train_data, held_out = _held_out(config)

    t = time.perf_counter()
    key = stage_key(teacher_id, config.data, config.student, config.distill.to_dict(), config.seed)
    student, record, reused = stages.distilled_student(teacher_model, train_data, config, work, key, teacher_id=teacher_id)
    rec.add("distill", record["summary"], t, reused=reused, details=record)

    if config.prune.ratio > 0:
        t = time.perf_counter()
        key = stage_key(key, config.prune.to_dict(), config.recovery.to_dict())
        student, record, reused = stages.pruned_student(student, teacher_model, train_data, config, work, key,
                                                        teacher_id=teacher_id)
        rec.add("prune", record["summary"], t, reused=reused, details=record)
    if work is None:
        report.passed = distributed.broadcast_flag(False)  # rank 0's outcome
        return report

    t = time.perf_counter()
    exported = stages.export_towers(student, held_out, config, work.start("export"))
    rec.add("export", exported.summary, t, details={"parity": exported.parity})

    t = time.perf_counter()
    quantized = stages.quantize_towers_for_target(student, train_data, exported, config, work.start("quantize"))
    rec.add("quantize", quantized.summary, t, details={"towers": {k: s.quantization for k, (s, _) in quantized.towers.items()}})

    t = time.perf_counter()
    verified = verify_with_recovery(teacher_model, student, held_out, exported, quantized, config, work)
    rec.add("verify", verified.report.summary(), t, details={"recovered": verified.recovered})
    report.metrics = {**verified.report.to_dict(), "recovered": verified.recovered, **size_metrics(teacher, teacher_model, student, verified.towers)}
    if not verified.report.passed:
        raise VerificationError(
            f"the compressed model loses {verified.report.drop * 100:.2f} points of {verified.report.metric} against "
            f"the teacher (tolerance {config.tolerance * 100:.2f}); work kept in {work.root}. Try a larger "
            "--student, more distillation epochs, or a higher --tolerance."
            + _teacher_offer(teacher_model, train_data, held_out, config, work, verified, report),
            report=report,
        )

    t = time.perf_counter()
    write_final_bundle(out, teacher_model, student, verified, config, report.metrics, teacher_id, labels, overwrite,
                       held_out=held_out)
    rec.add("bundle", f"{out} ({report.metrics['bundle_bytes'] / 1e6:.2f} MB)", t)
    report.out, report.passed = str(out), True
    return report
