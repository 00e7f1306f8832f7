"""Student architectures: a registry of small JSON specs, built against a teacher with weight inheritance.

Each ``*.json`` beside this file is one :class:`StudentSpec`. A tower entry is either a concrete tower
config (``{"arch": "narrow_resnet", "widths": [...]}``) or ``{"shrink": {"depth": 0.5, "width": 0.5}}``,
which derives the tower from the teacher's own (fewer layers, narrower), so one spec serves a CLIP
teacher, a BERT tower or a ResNet alike.

The student keeps the teacher's tokenizer, preprocessing, label set, embedding size and logit scale, so
its embeddings live in the same space and a teacher's label embeddings stay comparable.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vledge.compress.students.shrink import resolve_tower
from vledge.errors import ConfigError
from vledge.registry import Registry

log = logging.getLogger(__name__)

SPEC_DIR = Path(__file__).parent
# Measured on Fashion-MNIST: 12.3x fewer parameters than the resnet18 + BERT-4x256 demo teacher; zero-shot
# top-1 0.863 after 4 epochs of 20k images (~4 min on two cores), 0.868 after 10, the teacher's 0.867.
DEFAULT_STUDENT = "narrow-resnet18-bert2"
DEFAULT_CLIP_STUDENT = "clip-shrink-half"
# CLIP teachers at camera size (224 px): measured on the ViT-B/32 configuration's random weights with real photos
# (benchmarks/camera_int8_students.py): static INT8 keeps cosine 0.9998 to FP32 and runs 3.9x faster at batch 8,
# at 0.42 GMACs an image (clip-shrink-half: 0.9998, 2.9x, 0.60 GMACs). Accuracy after distillation at this size is
# unmeasured until a GPU run (benchmarks/device_checks.sh) trains the teacher.
DEFAULT_CAMERA_STUDENT = "camera-vit-shrink"
CAMERA_IMAGE_SIZE = 160  # CLIP teachers from this input size up get the camera student
# Not a registry entry: the teacher's own towers, exported and quantized without distillation.
TEACHER = "teacher"
TEACHER_DESCRIPTION = ("the teacher's own towers, no distillation: exported and quantized for the target, "
                       "verified by the same gate (about 4x smaller, no training)")
_CLIP_ARCHS = ("clip-text", "clip-vision")


@dataclass(frozen=True)
class StudentSpec:
    """A student architecture: two tower entries, whether to inherit weights from the teacher, and the
    reference teachers it is sized for (``vledge students`` shows its cost on each, see ``reference``)."""

    name: str
    description: str
    image_tower: dict = field(default_factory=dict)
    text_tower: dict = field(default_factory=dict)
    inherit: bool = True
    teachers: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name:
            raise ConfigError("a student spec needs a name")
        for side in ("image_tower", "text_tower"):
            entry = getattr(self, side)
            if not isinstance(entry, dict) or ("arch" not in entry and "shrink" not in entry):
                raise ConfigError(
                    f"student {self.name!r}: {side} must be a tower config with an 'arch', "
                    f"or {{'shrink': {{'depth': ..., 'width': ...}}}}; got {entry!r}"
                )
        if isinstance(self.teachers, str) or not all(isinstance(t, str) and t for t in self.teachers):
            raise ConfigError(f"student {self.name!r}: teachers must be a list of reference teacher names, got {self.teachers!r}")
        object.__setattr__(self, "teachers", tuple(self.teachers))

    def to_dict(self) -> dict:
        return {**asdict(self), "teachers": list(self.teachers)}

    @classmethod
    def from_dict(cls, data: dict) -> "StudentSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"student spec {data.get('name')!r} has unknown keys: {', '.join(unknown)}")
        return cls(**data)


STUDENTS: Registry[StudentSpec] = Registry("student")


def _load_specs() -> None:
    for path in sorted(SPEC_DIR.glob("*.json")):
        try:
            spec = StudentSpec.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"student spec {path} is malformed: {exc}") from None
        STUDENTS.register(spec.name, spec)


_load_specs()


def list_students() -> list[StudentSpec]:
    """Every registered student, sorted by name."""
    return [spec for _, spec in STUDENTS.items()]


def get_student(name: str) -> StudentSpec:
    """The student registered as ``name`` (ConfigError with a "did you mean" otherwise)."""
    if name == TEACHER:
        raise ConfigError(f"student {TEACHER!r} is the teacher itself, not an architecture to build")
    return STUDENTS.get(name)


def default_student(teacher) -> str:
    """The registered student to use for ``teacher`` when none is named."""
    archs = {teacher.image_tower.config.get("arch"), teacher.text_tower.config.get("arch")}
    if not archs & set(_CLIP_ARCHS):
        return DEFAULT_STUDENT
    return DEFAULT_CAMERA_STUDENT if teacher.preprocess.image_size >= CAMERA_IMAGE_SIZE else DEFAULT_CLIP_STUDENT


def build_student(spec: StudentSpec | str, teacher, *, seed: int = 0):
    """A fresh student DualEncoder for ``teacher``, with inherited weights where the tower families match.

    The student shares the teacher's tokenizer, preprocessing, labels, embedding size and logit scale.
    ``student.source["inherited"]`` records, per tower, which teacher layers were kept and which
    tensors were copied whole, sliced, or left freshly initialised.
    """
    import torch

    import vledge.models.narrow_resnet  # noqa: F401  registers the "narrow_resnet" image tower
    from vledge.compress.students.inherit import inherit_tower_
    from vledge.models.dual_encoder import DualEncoder
    from vledge.models.image_towers import build_image_tower
    from vledge.models.text_towers import build_text_tower

    spec = get_student(spec) if isinstance(spec, str) else spec
    embed_dim = teacher.embed_dim
    image_cfg = resolve_tower("image", spec.image_tower, teacher, spec.name)
    text_cfg = resolve_tower("text", spec.text_tower, teacher, spec.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = build_image_tower(image_cfg, embed_dim)
        text = build_text_tower(text_cfg, embed_dim)
    student = DualEncoder(
        image, text,
        preprocess=teacher.preprocess,
        tokenizer=teacher.tokenizer,
        logit_scale=float(teacher.logit_scale.detach()),
        labels=copy.deepcopy(teacher.labels),
        source={"kind": "vledge-student", "student": spec.name, "spec": spec.to_dict()},
    )
    inherited = {}
    for side, s_tower, t_tower in (("image", image, teacher.image_tower), ("text", text, teacher.text_tower)):
        if spec.inherit:
            inherited[side] = inherit_tower_(s_tower, t_tower)
        else:
            inherited[side] = {"family_match": False, "reason": "the spec sets inherit: false"}
    student.source["inherited"] = inherited
    student.eval()
    log.info(
        "student %s: %.2fM parameters (teacher %.2fM); inherited %s",
        spec.name, count_parameters(student) / 1e6, count_parameters(teacher) / 1e6,
        ", ".join(f"{side} {_inherit_summary(info)}" for side, info in inherited.items()),
    )
    return student


def count_parameters(model) -> int:
    """Trainable and frozen parameters together."""
    return sum(p.numel() for p in model.parameters())


def _inherit_summary(info: dict) -> str:
    if not info.get("family_match"):
        return "nothing"
    return f"{len(info['copied'])} copied + {len(info['sliced'])} sliced tensors"


__all__ = [
    "CAMERA_IMAGE_SIZE", "DEFAULT_CAMERA_STUDENT", "DEFAULT_CLIP_STUDENT", "DEFAULT_STUDENT", "STUDENTS", "TEACHER", "TEACHER_DESCRIPTION", "StudentSpec", "build_student", "count_parameters",
    "default_student", "get_student", "list_students",
]
