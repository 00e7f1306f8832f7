"""Weight inheritance (TinyCLIP style): initialise a smaller tower from a teacher tower of the same family.

Layers: a student with fewer layers (blocks per ResNet stage) keeps evenly spaced teacher layers, the
first and the last among them. Widths: every dimension takes the teacher's first channels, the same
ones in every tensor, so a channel keeps its meaning from layer to layer; attention projections take
whole heads (the first heads, the first dimensions of each). Tensors whose shapes cannot be cut from
the teacher's (wider, other kernel or patch grid) stay freshly initialised and are recorded as such.
"""

from __future__ import annotations

import re

import numpy as np
import torch

# Towers whose parameter names and layouts correspond.
_FAMILIES = {
    "resnet18": "resnet-basic", "resnet34": "resnet-basic", "narrow_resnet": "resnet-basic",
    "resnet50": "resnet-bottleneck", "mobilenet_v3_small": "mobilenet_v3_small",
    "mobilenet_v3_large": "mobilenet_v3_large", "vit": "vit", "bert": "bert",
    "clip-text": "clip-text", "clip-vision": "clip-vision",
}
# The stacked-layer index in parameter names; group 1 names the stack (one per ResNet stage).
_LAYER_PATTERNS = {
    "resnet-basic": r"(layer[1-4]\.)(\d+)\.",
    "vit": r"(encoder_layer_)(\d+)\.",
    "bert": r"(encoder\.layer\.)(\d+)\.",
    "clip-text": r"(encoder\.layers\.)(\d+)\.",
    "clip-vision": r"(encoder\.layers\.)(\d+)\.",
}
# Attention tensors laid out by head: (name pattern, dimension, how many stacked q/k/v blocks).
_HEAD_TENSORS = {
    "bert": ((r"attention\.self\.(query|key|value)\.(weight|bias)$", 0, 1), (r"attention\.output\.dense\.weight$", 1, 1)),
    "clip-text": ((r"self_attn\.[qkv]_proj\.(weight|bias)$", 0, 1), (r"self_attn\.out_proj\.weight$", 1, 1)),
    "vit": ((r"self_attention\.in_proj_(weight|bias)$", 0, 3), (r"self_attention\.out_proj\.weight$", 1, 1)),
}
_HEAD_TENSORS["clip-vision"] = _HEAD_TENSORS["clip-text"]
# Position tables of image towers index a patch grid: only a grid of the same size can be inherited.
_GRID_TENSORS = r"pos_embedding$|position_embedding\.weight$"


def tower_family(config: dict) -> str | None:
    return _FAMILIES.get(config.get("arch"))


def _heads(config: dict) -> tuple[int, int] | None:
    """(heads, head size) of a transformer tower config."""
    arch = config.get("arch")
    if arch == "bert":
        heads, hidden = int(config.get("num_heads", 4)), int(config.get("hidden_size", 256))
    elif arch == "vit":
        heads, hidden = int(config.get("num_heads", 3)), int(config.get("hidden_dim", 192))
    elif arch in ("clip-text", "clip-vision"):
        from transformers import CLIPTextConfig, CLIPVisionConfig

        hf = (CLIPTextConfig if arch == "clip-text" else CLIPVisionConfig)(**config["hf_config"])
        heads, hidden = hf.num_attention_heads, hf.hidden_size
    else:
        return None
    return heads, hidden // heads


def pick_layers(student_count: int, teacher_count: int) -> list[int]:
    """Evenly spaced teacher layers for a student with fewer: always the first, and the last when two or more."""
    if student_count >= teacher_count:
        return list(range(student_count))
    return [int(i) for i in np.linspace(0, teacher_count - 1, student_count).round()]


def _layer_map(student_keys, teacher_keys, pattern: str) -> dict[str, list[int]]:
    def counts(keys):
        found: dict[str, int] = {}
        for key in keys:
            m = re.search(pattern, key)
            if m:
                found[m.group(1)] = max(found.get(m.group(1), 0), int(m.group(2)) + 1)
        return found

    teacher_counts = counts(teacher_keys)
    return {stack: pick_layers(n, teacher_counts.get(stack, 0)) for stack, n in counts(student_keys).items()}


def _teacher_key(key: str, pattern: str | None, layers: dict[str, list[int]]) -> str:
    if pattern is None:
        return key
    m = re.search(pattern, key)
    if not m:
        return key
    picked = layers[m.group(1)]
    index = int(m.group(2))
    source = picked[index] if index < len(picked) else index
    return key[: m.start(2)] + str(source) + key[m.end(2):]


def _head_index(student: tuple[int, int], teacher: tuple[int, int], blocks: int) -> torch.Tensor | None:
    (s_heads, s_dim), (t_heads, t_dim) = student, teacher
    if s_heads > t_heads or s_dim > t_dim:
        return None
    one = [h * t_dim + d for h in range(s_heads) for d in range(s_dim)]
    return torch.tensor([b * t_heads * t_dim + i for b in range(blocks) for i in one])


def _cut(key: str, s: torch.Tensor, t: torch.Tensor, family: str, heads) -> torch.Tensor | None:
    """The part of teacher tensor ``t`` that initialises student tensor ``s``, or None if none fits."""
    if s.dim() != t.dim() or any(a > b for a, b in zip(s.shape, t.shape)):
        return None
    exact = set(range(2, s.dim())) if s.dim() == 4 else set()  # conv kernels: same size or nothing
    if family in ("vit", "clip-vision") and re.search(_GRID_TENSORS, key):
        exact |= set(range(s.dim() - 1))
    if any(s.shape[d] != t.shape[d] for d in exact):
        return None
    head_dims = {}
    for pattern, dim, blocks in _HEAD_TENSORS.get(family, ()):
        if heads and re.search(pattern, key):
            index = _head_index(heads[0], heads[1], blocks)
            if index is None or len(index) != s.shape[dim]:
                return None
            head_dims[dim] = index
    out = t
    for dim, size in enumerate(s.shape):
        index = head_dims.get(dim)
        out = out.index_select(dim, index) if index is not None else out.narrow(dim, 0, size)
    return out


@torch.no_grad()
def inherit_tower_(student: torch.nn.Module, teacher: torch.nn.Module) -> dict:
    """Copy or slice ``teacher``'s weights into ``student`` in place; return what was inherited.

    The record: ``family_match``, ``layers`` (per stack: the teacher layer behind each student layer),
    ``copied`` (same shape), ``sliced`` (cut down) and ``fresh`` (left as initialised) tensor names.
    """
    family = tower_family(student.config)
    teacher_family = tower_family(teacher.config)
    if family is None or family != teacher_family:
        return {
            "family_match": False,
            "reason": f"student {student.config.get('arch')!r} and teacher {teacher.config.get('arch')!r} towers differ",
        }
    s_state, t_state = student.state_dict(), teacher.state_dict()
    pattern = _LAYER_PATTERNS.get(family)
    layers = _layer_map(s_state, t_state, pattern) if pattern else {}
    s_heads, t_heads = _heads(student.config), _heads(teacher.config)
    heads = (s_heads, t_heads) if s_heads and t_heads else None
    record = {"family_match": True, "layers": layers, "copied": [], "sliced": [], "fresh": []}
    for key, s in s_state.items():
        t = t_state.get(_teacher_key(key, pattern, layers))
        piece = None if t is None else _cut(key, s, t, family, heads)
        if piece is None:
            record["fresh"].append(key)
            continue
        s.copy_(piece)
        record["copied" if piece.shape == t.shape else "sliced"].append(key)
    return record
