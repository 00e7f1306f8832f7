"""What the teacher itself, quantized for the target, would give: measured when a distilled student fails
the gate, so the error offers it (``--student teacher``) with its top-1, size and speed beside the student's."""

from __future__ import annotations

import logging
import statistics
import time

from typing import TYPE_CHECKING

from vledge.compress.verify.measure import VerifyReport, metric_value
from vledge.compress.workdir import WorkDir

if TYPE_CHECKING:
    from vledge.compress.config import CompressConfig

log = logging.getLogger(__name__)
TIMED_CALLS = 20  # batch-1 image calls timed for each side (median)


def measure_quantized_teacher(teacher, train_data, held_out, config: "CompressConfig", work: WorkDir,
                              failed: VerifyReport, student_edge) -> dict:
    """Run stages 4 and 5 of ``config`` on the teacher's own towers, evaluate them on the gate's held-out
    data, and time their batch-1 image call against the failed student's bundle."""
    from vledge.compress.export.compact import compact_towers
    from vledge.compress.export.stage import export_towers
    from vledge.compress.stages import quantized_towers
    from vledge.compress.verify.gate import candidate_bundle
    from vledge.evaluate import RuntimeEmbedder, evaluate

    target = config.target
    log.info("verify failed: measuring the teacher itself quantized for %s, to offer it", target.name)
    exported = export_towers(teacher, held_out, work.start("teacher-export"), config.export_config())
    quantized = quantized_towers(teacher, train_data, exported, work.start("teacher-quantize"), config.quantize,
                                 config.seed)
    towers, _ = compact_towers(quantized.towers, work.path("teacher-compact"))  # as it would ship
    edge = candidate_bundle(work.path("teacher-candidate"), teacher, towers, target)
    result = evaluate(RuntimeEmbedder(edge), held_out, max_samples=config.eval_samples).to_dict()
    metric = failed.metric
    teacher_value = metric_value(failed.teacher, metric)
    pixels = held_out.batch([0], teacher.preprocess).pixels
    return {
        "metric": metric,
        "value": metric_value(result, metric),
        "kept": metric_value(result, metric) / max(teacher_value, 1e-12),
        "bundle_bytes": sum(f.stat().st_size for _, files in towers.values() for f in files),
        "image_b1_ms": _image_ms(edge, pixels),
        "student_value": metric_value(failed.bundle, metric),
        "student_image_b1_ms": _image_ms(student_edge, held_out.batch([0], student_edge.manifest.preprocess).pixels),
    }


def describe(offer: dict, target: str) -> str:
    """One sentence for the gate's error: what ``--student teacher`` gives, measured."""
    return (
        f"The teacher itself quantized for {target}, measured on the same data: {offer['metric']} "
        f"{offer['value']:.4f} ({offer['kept'] * 100:.1f}% of the teacher's; the student's bundle {offer['student_value']:.4f}), "
        f"{offer['bundle_bytes'] / 1e6:.2f} MB, image tower {offer['image_b1_ms']:.2f} ms at batch 1 "
        f"(the student's {offer['student_image_b1_ms']:.2f} ms); to ship it: vledge compress --student teacher."
    )


def _image_ms(edge, pixels) -> float:
    edge.encode_pixels(pixels)  # warm-up
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        edge.encode_pixels(pixels)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)
