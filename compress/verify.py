"""Stage 7, verify: the exported bundle against the teacher and against its own FP32 student.

The gate: the bundle may lose at most ``tolerance`` zero-shot top-1 (or image->text recall@1 on
unlabelled data) against the teacher on held-out data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vledge.data.base import ImageTextDataset
from vledge.evaluate import EvalReport, RuntimeEmbedder, TorchEmbedder, evaluate

COSINE_SAMPLES = 512


@dataclass
class VerifyReport:
    teacher: dict
    bundle: dict
    student_fp32: dict | None
    metric: str  # "top1" or "i2t@1"
    drop: float  # teacher - bundle, in the metric's units (fractions)
    agreement: float | None  # share of images where bundle and teacher predict the same class
    cosine: dict[str, float] = field(default_factory=dict)  # per tower, bundle vs reference, mean over samples
    cosine_reference: str = "fp32 student"
    tolerance: float = 0.02
    placement: str = ""

    @property
    def passed(self) -> bool:
        return self.drop <= self.tolerance + 1e-12

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        t, b = self.teacher.get(self.metric), self.bundle.get(self.metric)
        cos = ", ".join(f"{k} {v:.4f}" for k, v in self.cosine.items())
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"verify: {verdict} {self.metric} teacher {t:.4f} -> bundle {b:.4f} (drop {self.drop * 100:.2f} pts, "
            f"tolerance {self.tolerance * 100:.2f}); cosine to {self.cosine_reference} {cos}; on {self.placement}"
        )


def gate_metric(report: EvalReport) -> tuple[str, float]:
    if report.top1 is not None:
        return "top1", report.top1
    return "i2t@1", report.recall.get("i2t@1", 0.0)


def _cosines(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, axis=1)))


def tower_cosines(reference: TorchEmbedder, bundle: RuntimeEmbedder, data: ImageTextDataset) -> dict[str, float]:
    """Mean cosine between the bundle's and a PyTorch model's embeddings of the same inputs."""
    n = min(COSINE_SAMPLES, len(data))
    batch = data.batch(range(n), bundle.preprocess)
    texts = list(batch.captions)
    if data.classes:
        texts += [t.format(c) for c in data.classes for t in data.templates]
    return {
        "image": _cosines(reference.embed_pixels(batch.pixels), bundle.embed_pixels(batch.pixels)),
        "text": _cosines(reference.embed_texts(texts), bundle.embed_texts(texts)),
    }


def verify_bundle(
    edge_model,
    reference,
    held_out: ImageTextDataset,
    *,
    teacher_eval: EvalReport,
    student_eval: EvalReport | None,
    tolerance: float,
    max_samples: int | None = None,
    reference_name: str = "fp32 student",
) -> VerifyReport:
    """Evaluate a loaded bundle on ``held_out`` against the teacher's results; embedding cosines are
    measured against ``reference`` (the FP32 student in compress, the teacher in `vledge check`)."""
    bundle_embedder = RuntimeEmbedder(edge_model)
    bundle_eval = evaluate(bundle_embedder, held_out, max_samples=max_samples)
    metric, teacher_value = gate_metric(teacher_eval)
    _, bundle_value = gate_metric(bundle_eval)
    agreement = None
    if teacher_eval.predictions is not None and bundle_eval.predictions is not None:
        agreement = float(np.mean(teacher_eval.predictions == bundle_eval.predictions))
    info = edge_model.info()
    return VerifyReport(
        teacher=teacher_eval.to_dict(),
        bundle=bundle_eval.to_dict(),
        student_fp32=student_eval.to_dict() if student_eval is not None else None,
        metric=metric,
        drop=float(teacher_value - bundle_value),
        agreement=agreement,
        cosine=tower_cosines(TorchEmbedder(reference), bundle_embedder, held_out),
        cosine_reference=reference_name,
        tolerance=tolerance,
        placement=f"{info.get('backend')}:{info.get('device')}",
    )
