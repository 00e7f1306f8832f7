"""Stage 6, verify: the exported bundle against the teacher and against its own FP32 student.

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
    student_agreement: float | None  # the same against the FP32 PyTorch student
    cosine: dict[str, float] = field(default_factory=dict)  # per tower, bundle vs reference, mean over samples
    cosine_reference: str = "fp32 student"
    tolerance: float = 0.02
    placement: str = ""

    @property
    def passed(self) -> bool:
        return self.drop <= self.tolerance + 1e-12

    def value(self, side: dict) -> float:
        return metric_value(side, self.metric)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        t, b = self.value(self.teacher), self.value(self.bundle)
        cos = ", ".join(f"{k} {v:.4f}" for k, v in self.cosine.items())
        verdict = "PASS" if self.passed else "FAIL"
        agree = ", ".join(
            f"{who} {value:.4f}" for who, value in (("teacher", self.agreement), ("student", self.student_agreement))
            if value is not None
        )
        return (
            f"verify: {verdict} {self.metric} teacher {t:.4f} -> bundle {b:.4f} (drop {self.drop * 100:.2f} pts, "
            f"tolerance {self.tolerance * 100:.2f}); cosine to {self.cosine_reference} {cos}"
            + (f"; top-1 agreement with {agree}" if agree else "") + f"; on {self.placement}"
        )


def metric_value(side: dict, metric: str) -> float:
    """The gate metric from one evaluation dict (``EvalReport.to_dict()``)."""
    return side[metric] if metric == "top1" else side["recall"][metric]


def gate_metric(report: EvalReport) -> tuple[str, float]:
    if report.top1 is not None:
        return "top1", report.top1
    return "i2t@1", report.recall.get("i2t@1", 0.0)


def _agreement(a: EvalReport, b: EvalReport) -> float | None:
    """Share of images on which two models predict the same top-1 class."""
    if a.predictions is None or b.predictions is None:
        return None
    return float(np.mean(a.predictions == b.predictions))


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
    agreement = _agreement(teacher_eval, bundle_eval)
    info = edge_model.info()
    return VerifyReport(
        teacher=teacher_eval.to_dict(),
        bundle=bundle_eval.to_dict(),
        student_fp32=student_eval.to_dict() if student_eval is not None else None,
        metric=metric,
        drop=float(teacher_value - bundle_value),
        agreement=agreement,
        student_agreement=_agreement(student_eval, bundle_eval) if student_eval is not None else None,
        cosine=tower_cosines(TorchEmbedder(reference), bundle_embedder, held_out),
        cosine_reference=reference_name,
        tolerance=tolerance,
        placement=f"{info.get('backend')}:{info.get('device')}",
    )
