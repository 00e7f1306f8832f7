"""Width pruning of transformer towers: MLP hidden units and attention heads, physically removed.

MLP width: any pair of Linear layers with only elementwise ops between them (HF BERT's
``intermediate.dense`` -> ``output.dense``, HF CLIP's ``fc1`` -> ``fc2``, torchvision ViT's
``MLPBlock``). The hidden units with the lowest combined Lp-norm (row of the first layer plus
column of the second) go; the block's input and output widths never change.

Attention heads: attention modules with a native ``prune_heads`` (the Hugging Face BERT family),
which also keeps their head count consistent. Other attention kinds keep their heads; the reason
is reported (see ``HEADS_UNSUPPORTED``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NAMED_PAIRS = (("intermediate.dense", "output.dense"), ("fc1", "fc2"))
ELEMENTWISE = (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Dropout, nn.Identity)

# attention kinds whose heads stay, and why
HEADS_UNSUPPORTED = {
    "MultiheadAttention": (
        "nn.MultiheadAttention (torchvision ViT) packs q/k/v into one in_proj_weight and checks embed_dim "
        "in its forward, so heads cannot be removed without replacing the module; MLP width is pruned instead"
    ),
    "CLIPAttention": (
        "CLIPAttention (transformers 4.57.6) reshapes its output to the width of its input "
        "(attn_output.reshape(batch, seq, embed_dim)), so removing heads breaks its forward; "
        "MLP width is pruned instead"
    ),
}


def _child(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def find_mlp_pairs(tower: nn.Module) -> list[tuple[str, str]]:
    """(first, second) Linear names, relative to ``tower``, of every MLP whose hidden width can shrink."""
    pairs = []
    for name, module in tower.named_modules():
        prefix = f"{name}." if name else ""
        for first, second in NAMED_PAIRS:
            a, b = _child(module, first), _child(module, second)
            if isinstance(a, nn.Linear) and isinstance(b, nn.Linear) and a.out_features == b.in_features:
                pairs.append((prefix + first, prefix + second))
        if isinstance(module, nn.Sequential):
            linear = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            between = list(module)[linear[0] + 1 : linear[-1]] if len(linear) == 2 else []
            if len(linear) == 2 and all(isinstance(m, ELEMENTWISE) for m in between):
                pairs.append((f"{prefix}{linear[0]}", f"{prefix}{linear[1]}"))
    return pairs


def has_transformer_blocks(tower: nn.Module) -> bool:
    return bool(find_mlp_pairs(tower)) or any(type(m).__name__ in HEADS_UNSUPPORTED for m in tower.modules())


def kept_width(width: int, ratio: float, round_to: int) -> int:
    """Units kept: ``width * (1 - ratio)`` rounded down to a multiple of ``round_to``; ``width`` if that is 0."""
    keep = int(width * (1 - ratio) + 1e-9)
    keep -= keep % round_to
    return keep if keep > 0 else width


def _slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``layer`` keeping only output rows (dim 0) or input columns (dim 1) ``index``."""
    weight = layer.weight.detach().index_select(dim, index)
    new = type(layer)(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias[index] if dim == 0 else layer.bias)
    return new.train(layer.training)


def _replace(tower: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(tower.get_submodule(parent) if parent else tower, leaf, module)


@torch.no_grad()
def prune_mlp_width_(
    tower: nn.Module, *, ratio: float, norm: int, round_to: int, ignored: Callable[[str], bool]
) -> int:
    """Remove ``ratio`` of every MLP's hidden units (lowest Lp-norm first), in place; return MLPs changed."""
    changed = 0
    for first, second in find_mlp_pairs(tower):
        if ignored(first) or ignored(second):
            continue
        fc_in, fc_out = tower.get_submodule(first), tower.get_submodule(second)
        width = fc_in.out_features
        keep = kept_width(width, ratio, round_to)
        if keep == width:
            continue
        score = fc_in.weight.abs().pow(norm).sum(1) + fc_out.weight.abs().pow(norm).sum(0)
        index = score.topk(keep).indices.sort().values
        _replace(tower, first, _slice_linear(fc_in, index, 0))
        _replace(tower, second, _slice_linear(fc_out, index, 1))
        changed += 1
    return changed


def _head_scores(attention: nn.Module, norm: int) -> torch.Tensor:
    heads, size = attention.self.num_attention_heads, attention.self.attention_head_size
    score = sum(
        getattr(attention.self, p).weight.abs().pow(norm).view(heads, size, -1).sum((1, 2))
        for p in ("query", "key", "value")
    )
    return score + attention.output.dense.weight.abs().pow(norm).view(-1, heads, size).sum((0, 2))


@torch.no_grad()
def prune_attention_heads_(
    tower: nn.Module, *, ratio: float, norm: int, ignored: Callable[[str], bool]
) -> tuple[dict[str, list[int]], list[str]]:
    """Remove ``ratio`` of every layer's heads (lowest Lp-norm first, at least one kept), in place.

    Returns the original indices of the heads removed per attention module, and the reasons
    for attention modules whose heads could not be removed.
    """
    removed, skipped = {}, set()
    for name, attention in list(tower.named_modules()):
        kind = type(attention).__name__
        if kind in HEADS_UNSUPPORTED:
            skipped.add(f"attention_heads: {HEADS_UNSUPPORTED[kind]}")
            continue
        if not (isinstance(getattr(attention, "pruned_heads", None), set) and callable(getattr(attention, "prune_heads", None))):
            continue
        parts = [f"{name}.self.{p}" for p in ("query", "key", "value")] + [f"{name}.output.dense"]
        if ignored(name) or any(ignored(p) for p in parts):
            continue
        heads = attention.self.num_attention_heads
        drop = heads - max(1, int(heads * (1 - ratio) + 1e-9))
        if drop == 0:
            continue
        lowest = _head_scores(attention, norm).topk(drop, largest=False).indices.tolist()
        # prune_heads takes indices in the original numbering, which earlier pruning shifted
        alive = sorted(set(range(heads + len(attention.pruned_heads))) - attention.pruned_heads)
        original = sorted(alive[i] for i in lowest)
        attention.prune_heads(set(original))
        removed[name] = original
    return removed, sorted(skipped)
