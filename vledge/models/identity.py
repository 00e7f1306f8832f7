"""What a model is, in numbers: its parameter count, a one-line description and its fingerprint."""

from __future__ import annotations

import hashlib


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(model, role: str = "") -> str:
    towers = f"{model.image_tower.config['arch']} + {model.text_tower.config['arch']}"
    return f"{role + ' ' if role else ''}{towers}, {count_parameters(model) / 1e6:.2f}M params".strip()


def model_fingerprint(model) -> str:
    """sha256 of the weights and the tokenizer: a teacher's identity for provenance, resume and caches."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(model.tokenizer.backend.to_str().encode())
    return digest.hexdigest()
