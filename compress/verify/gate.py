"""Stage 6, the verify gate with recovery: if the quantized bundle loses too much, keep the tower that
drifted most from its FP32 self in higher precision, verify again, and record it.

The gate measures the files the bundle ships: each candidate's ONNX towers are compacted
(``compress.export.compact``) before they are loaded, and those compacted files are what it returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vledge.bundle import TowerSpec
from vledge.compress.bundle.writer import bundle_precision, write_bundle
from vledge.compress.export.compact import compact_towers
from vledge.compress.export.stage import Exported, fp32_tower
from vledge.compress.verify.config import GateConfig
from vledge.compress.verify.measure import VerifyReport, gate_metric, verify_bundle
from vledge.compress.workdir import WorkDir
from vledge.evaluate import TorchEmbedder, evaluate
from vledge.targets import TargetSpec

log = logging.getLogger(__name__)


@dataclass
class Verified:
    report: VerifyReport
    towers: dict[str, tuple[TowerSpec, list[Path]]]
    edge: object  # the loaded candidate bundle (vledge.runtimes.EdgeModel)
    recovered: list[dict] = field(default_factory=list)
    compacted: dict = field(default_factory=dict)  # per ONNX tower, its bytes before and after compaction


def candidate_bundle(folder: Path, model, towers, target: TargetSpec):
    """Write the towers as a bundle (no labels, metrics or recipe yet) and load it through the edge runtime."""
    import math

    import vledge.runtimes

    write_bundle(
        folder, towers=towers, tokenizer=model.tokenizer, preprocess=model.preprocess, target=target,
        precision=bundle_precision(towers), embed_dim=model.embed_dim,
        logit_scale=math.exp(model.logit_scale.item()), config={}, metrics={}, provenance={}, overwrite=True,
    )
    return vledge.runtimes.load(folder)


def verify_with_recovery(teacher, student, held_out, exported: Exported, towers: dict, work: WorkDir,
                         target: TargetSpec, config: GateConfig = GateConfig()) -> Verified:
    """Verify ``towers`` (kind -> (spec, files), the quantized ones) as a ``target`` bundle against the
    teacher; while below ``config.tolerance``, the tower furthest from its FP32 self goes back to FP32.
    The returned towers are the compacted files that were verified."""
    limit = config.eval_samples
    teacher_eval = evaluate(TorchEmbedder(teacher), held_out, max_samples=limit)
    student_eval = evaluate(TorchEmbedder(student), held_out, max_samples=limit)
    _, teacher_value = gate_metric(teacher_eval)
    metric, student_value = gate_metric(student_eval)
    towers = dict(towers)
    recovered: list[dict] = []
    while True:
        shipped, compacted = compact_towers(towers, work.path("compact"))
        edge = candidate_bundle(work.path("candidate"), student, shipped, target)
        report = verify_bundle(edge, student, held_out, teacher_eval=teacher_eval, student_eval=student_eval,
                               tolerance=config.tolerance, max_samples=limit)
        if report.passed:
            break
        if teacher_value - student_value > config.tolerance:
            log.warning("verify: the FP32 student itself loses %.2f points of %s: precision cannot recover that",
                        (teacher_value - student_value) * 100, metric)
            break
        candidates = [k for k in sorted(report.cosine, key=report.cosine.get)
                      if towers[k][0].precision != "fp32"]
        if not candidates:
            break
        kind = candidates[0]
        log.warning("verify: %s below tolerance; keeping the %s tower in FP32 (cosine to FP32 %.4f) and retrying",
                    metric, kind, report.cosine[kind])
        towers[kind] = fp32_tower(exported, kind, work.path("quantize"))
        recovered.append({"tower": kind, "precision": "fp32", "cosine_before": report.cosine[kind],
                          "drop_before": report.drop})
    return Verified(report, shipped, edge, recovered, compacted)
