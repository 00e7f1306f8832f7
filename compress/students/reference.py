"""Reference teachers: the tower configs of the teachers students are sized for, and what a student costs on each.

A student spec names the reference teachers it is meant for (``"teachers"`` in its JSON). ``measure``
builds the student against such a teacher on torch's meta device (no memory, no weights) and reports its
parameters, its multiply-accumulates per image and per prompt at the teacher's input size, and which of its
towers inherit the teacher's weights. ``benchmarks/camera_teachers.py`` writes the camera-sized teachers
from the same configs, so what ``vledge students`` prints is what the benchmark builds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

from vledge.errors import ConfigError
from vledge.registry import Registry

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_VOCAB = 49408  # OpenAI's CLIP byte-level BPE
CLIP_TOKENS = 77


def clip_vision(hidden: int, layers: int, heads: int, mlp: int, patch: int, image_size: int = 224) -> dict:
    return {"arch": "clip-vision", "hf_config": {
        "hidden_size": hidden, "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
        "image_size": image_size, "patch_size": patch,
    }}


def clip_text(hidden: int, layers: int, heads: int, mlp: int, vocab: int = CLIP_VOCAB, tokens: int = CLIP_TOKENS) -> dict:
    return {"arch": "clip-text", "hf_config": {
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": mlp, "num_hidden_layers": layers,
        "num_attention_heads": heads, "max_position_embeddings": tokens,
    }}


@dataclass(frozen=True)
class TeacherSpec:
    """A reference teacher: its two tower configs, embedding size, input size, vocabulary and text length."""

    name: str
    description: str
    image_tower: dict
    text_tower: dict
    embed_dim: int
    image_size: int
    vocab_size: int
    max_length: int
    pad_id: int = 0
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD


REFERENCE_TEACHERS: Registry[TeacherSpec] = Registry("reference teacher")
for _spec in (
    TeacherSpec("demo", "the Fashion-MNIST demo teacher: resnet18 (small stem) + BERT 4x256, 28 px",
                {"arch": "resnet18", "stem": "small"},
                {"arch": "bert", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
                embed_dim=256, image_size=28, vocab_size=2000, max_length=32),
    TeacherSpec("clip-vit-b32", "CLIP ViT-B/32's configuration: 224 px, 77 tokens, text width 512, 12 + 12 layers",
                clip_vision(768, 12, 12, 3072, 32), clip_text(512, 12, 8, 2048),
                embed_dim=512, image_size=224, vocab_size=CLIP_VOCAB, max_length=CLIP_TOKENS),
    TeacherSpec("clip-vit-b16", "CLIP ViT-B/16's configuration: as ViT-B/32 with 16 px patches (197 tokens an image)",
                clip_vision(768, 12, 12, 3072, 16), clip_text(512, 12, 8, 2048),
                embed_dim=512, image_size=224, vocab_size=CLIP_VOCAB, max_length=CLIP_TOKENS),
    TeacherSpec("resnet50-bert-base", "a vledge teacher: resnet50 (ImageNet stem) + BERT-base (12 x 768), 224 px, 77 tokens",
                {"arch": "resnet50", "stem": "standard"},
                {"arch": "bert", "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072,
                 "pooling": "cls"},
                embed_dim=512, image_size=224, vocab_size=30522, max_length=CLIP_TOKENS),
    TeacherSpec("tiny-clip-224", "the test suite's 224-px CLIP: two 32-wide layers a tower, 32 px patches (under 1 MB)",
                clip_vision(32, 2, 2, 64, 32), clip_text(32, 2, 2, 64, vocab=1024),
                embed_dim=16, image_size=224, vocab_size=1024, max_length=CLIP_TOKENS),
):
    REFERENCE_TEACHERS.register(_spec.name, _spec)


def text_tower_config(spec: TeacherSpec) -> dict:
    """The text tower config with its vocabulary and positions (a BERT tower takes them from the tokenizer)."""
    if spec.text_tower["arch"] != "bert":
        return spec.text_tower
    return {**spec.text_tower, "vocab_size": spec.vocab_size, "pad_id": spec.pad_id, "max_position": spec.max_length}


@functools.lru_cache(maxsize=8)
def stand_in_teacher(name: str):
    """An object with what ``build_student`` reads of reference teacher ``name``, its towers on the meta device."""
    spec = REFERENCE_TEACHERS.get(name)
    import torch

    import vledge.models  # noqa: F401  registers the clip-* and narrow_resnet towers
    from vledge.images import PreprocessSpec
    from vledge.models.image_towers import build_image_tower
    from vledge.models.text_towers import build_text_tower

    with torch.device("meta"):
        image = build_image_tower(spec.image_tower, spec.embed_dim)
        text = build_text_tower(text_tower_config(spec), spec.embed_dim)
    backend = SimpleNamespace(get_vocab_size=lambda: spec.vocab_size)
    tokenizer = SimpleNamespace(backend=backend, spec=SimpleNamespace(pad_id=spec.pad_id, max_length=spec.max_length))
    return SimpleNamespace(
        image_tower=image, text_tower=text, embed_dim=spec.embed_dim, tokenizer=tokenizer, labels=None,
        preprocess=PreprocessSpec(image_size=spec.image_size, mean=spec.mean, std=spec.std),
        logit_scale=torch.tensor(4.6052), parameters=lambda: [*image.parameters(), *text.parameters()],
    )


def tower_macs(tower, kind: str, spec: TeacherSpec) -> int:
    """Multiply-accumulates of one forward at batch 1 (an image at the input size, or ``max_length`` tokens)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = next(tower.parameters()).device  # meta towers cost nothing to run; real ones run once
    was_training = tower.training
    tower.eval()  # BatchNorm in training mode refuses a batch of one
    try:
        with torch.device(device), torch.no_grad(), FlopCounterMode(display=False) as counter:
            if kind == "image":
                tower(torch.empty(1, 3, spec.image_size, spec.image_size))
            else:
                ids = torch.zeros(1, spec.max_length, dtype=torch.int64)
                tower(ids, torch.ones_like(ids))
    finally:
        tower.train(was_training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class StudentCost:
    """A student on one reference teacher: parameters, MACs per tower at batch 1, towers that inherit."""

    teacher: str
    image_size: int
    params: int
    image_macs: int
    text_macs: int
    inherits: tuple[str, ...]


def measure(student_spec, teacher_name: str) -> StudentCost:
    """``student_spec`` built against the reference teacher ``teacher_name``, measured on the meta device."""
    import logging

    import torch

    from vledge.compress.students import build_student

    spec = REFERENCE_TEACHERS.get(teacher_name)
    teacher = stand_in_teacher(teacher_name)
    logger = logging.getLogger("vledge.compress.students")
    level = logger.level
    logger.setLevel(logging.WARNING)  # build_student logs one line a student: noise in a listing
    try:
        with torch.device("meta"):
            student = build_student(student_spec, teacher)
    except ConfigError as exc:
        raise ConfigError(f"student {student_spec.name!r} does not fit reference teacher {teacher_name!r}: {exc}") from None
    finally:
        logger.setLevel(level)
    inherited = student.source["inherited"]
    return StudentCost(
        teacher=teacher_name, image_size=spec.image_size,
        params=sum(p.numel() for p in student.parameters()),
        image_macs=tower_macs(student.image_tower, "image", spec),
        text_macs=tower_macs(student.text_tower, "text", spec),
        inherits=tuple(side for side in ("image", "text") if inherited[side].get("family_match")),
    )


def measure_teacher(teacher_name: str) -> StudentCost:
    """The reference teacher itself, measured like a student (it inherits nothing)."""
    spec = REFERENCE_TEACHERS.get(teacher_name)
    teacher = stand_in_teacher(teacher_name)
    return StudentCost(
        teacher=teacher_name, image_size=spec.image_size, params=sum(p.numel() for p in teacher.parameters()),
        image_macs=tower_macs(teacher.image_tower, "image", spec), text_macs=tower_macs(teacher.text_tower, "text", spec),
        inherits=(),
    )
