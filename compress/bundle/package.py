"""Stage 7, bundle: measured sizes, the compiled label set, provenance, and the atomic final write."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from vledge.compress.bundle.probes import bundle_probes
from vledge.compress.bundle.writer import bundle_precision, write_bundle
from vledge.models.identity import count_parameters
from vledge.targets import TargetSpec

if TYPE_CHECKING:
    from vledge.compress.verify.gate import Verified

DEFAULT_TEMPLATES = ("{}",)


def weights_on_disk(teacher_path, teacher) -> int:
    """The teacher's weights on disk: its folder's safetensors (not .train_state/), and with a LoRA adapter
    both the base model's and the adapter's."""
    sources = (teacher_path, teacher.source.get("path"), teacher.source.get("adapter"))
    folders = {Path(p).resolve() for p in sources if p}
    return sum(p.stat().st_size for folder in folders for p in folder.glob("*.safetensors"))


def size_metrics(teacher_path, teacher, student, towers) -> dict:
    """Parameters and bytes of teacher and bundle, and their ratios."""
    teacher_bytes = weights_on_disk(teacher_path, teacher)
    bundle_bytes = sum(f.stat().st_size for _, files in towers.values() for f in files)
    t_params, s_params = count_parameters(teacher), count_parameters(student)
    return {
        "teacher_params": t_params,
        "student_params": s_params,
        "param_ratio": round(t_params / s_params, 2),
        "teacher_bytes": teacher_bytes,
        "bundle_bytes": bundle_bytes,
        "size_ratio": round(teacher_bytes / bundle_bytes, 2) if teacher_bytes else None,
    }


def label_set(edge, teacher, labels: list[str] | None) -> dict | None:
    """The compiled label set: the given labels, else the teacher's class names, through the bundle's text tower."""
    names = labels or (teacher.labels or {}).get("classes")
    if not names:
        return None
    templates = list((teacher.labels or {}).get("templates") or DEFAULT_TEMPLATES)
    return {"names": list(names), "templates": templates, "embeddings": edge.label_embeddings(list(names), templates)}


def write_final_bundle(out: Path, teacher, student, verified: "Verified", *, target: TargetSpec, recipe: dict,
                       metrics: dict, teacher_id: str, labels: list[str] | None = None, held_out=None,
                       overwrite: bool = False) -> Path:
    """The verified towers as the final bundle at ``out``: the label set compiled through the bundle's own
    text tower, self-test probes, the ``recipe`` (the run's resolved config), ``metrics`` and provenance."""
    provenance = {
        "teacher": {"path": teacher.source.get("path"), "kind": teacher.source.get("kind"), "sha256": teacher_id},
        "student": student.source.get("student", recipe.get("student")),
    }
    return write_bundle(
        out, towers=verified.towers, tokenizer=student.tokenizer, preprocess=student.preprocess,
        target=target, precision=bundle_precision(verified.towers), embed_dim=student.embed_dim,
        logit_scale=math.exp(student.logit_scale.item()), labels=label_set(verified.edge, teacher, labels),
        probes=bundle_probes(student, held_out, verified.edge),
        config=recipe, metrics=metrics, provenance=provenance, overwrite=overwrite,
    )
