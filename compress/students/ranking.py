"""Students ranked for one teacher folder: what each would cost built from it, so a user can choose by budget.

Each registered student is built from the given teacher (weights inherited where the families match), and
measured at the teacher's input size: parameters, multiply-accumulates per image and per prompt (the estimate
of latency: it ranks by them), and the tower bytes the target's precision would ship. A student that does not
fit the teacher is listed with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

from vledge.compress.students.reference import tower_macs
from vledge.errors import ConfigError

# Bytes per weight each target precision ships (INT8 towers keep a few float scales: left out of an estimate).
BYTES_PER_WEIGHT = {"int8": 1, "int8+fp16": 1, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class Ranked:
    """One student built from the teacher: its cost, or why it does not fit."""

    name: str
    params: int | None = None
    image_macs: int | None = None
    text_macs: int | None = None
    size_bytes: int | None = None
    inherits: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "image_macs": self.image_macs, "text_macs": self.text_macs,
                "estimated_size_bytes": self.size_bytes, "inherits": list(self.inherits), "error": self.error}


def rank_students(teacher, precision: str) -> list[Ranked]:
    """Every registered student built from ``teacher`` (a loaded DualEncoder), cheapest image tower first."""
    from vledge.compress.students import build_student, list_students

    shape = SimpleNamespace(image_size=teacher.preprocess.image_size, max_length=teacher.tokenizer.spec.max_length)
    per_weight = BYTES_PER_WEIGHT[precision]
    logger = logging.getLogger("vledge.compress.students")
    level = logger.level
    logger.setLevel(logging.WARNING)  # build_student logs one line a student: noise in a ranking
    ranked = []
    try:
        for spec in list_students():
            try:
                student = build_student(spec, teacher)
            except ConfigError as exc:
                ranked.append(Ranked(spec.name, error=str(exc)))
                continue
            params = sum(p.numel() for p in student.parameters())
            inherited = student.source["inherited"]
            ranked.append(Ranked(
                spec.name, params, tower_macs(student.image_tower, "image", shape),
                tower_macs(student.text_tower, "text", shape), params * per_weight,
                tuple(side for side in ("image", "text") if inherited[side].get("family_match")),
            ))
    finally:
        logger.setLevel(level)
    return sorted(ranked, key=lambda r: (r.error is not None, r.image_macs or 0, r.params or 0))
