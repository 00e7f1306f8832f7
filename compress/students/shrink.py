"""Turn a student's tower entry into a concrete tower config for a given teacher.

Concrete entries get what only the teacher knows (image size, vocabulary, stem for the image size).
``{"shrink": {"depth": d, "width": w}}`` entries derive the tower from the teacher's: ``depth`` keeps that
fraction of the layers (blocks per stage for ResNets), ``width`` that fraction of the attention heads
(head size kept) and MLP width, or of the channels.
"""

from __future__ import annotations

from vledge.errors import ConfigError

_SMALL_IMAGE = 64  # up to this size the small stems (stride-1 or 3x3) suit the image
_RESNET_WIDTHS = (64, 128, 256, 512)
_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
_STEM_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "narrow_resnet")


def resolve_tower(side: str, entry: dict, teacher, student: str) -> dict:
    """The concrete config of the student's ``side`` ("image" or "text") tower."""
    tower = teacher.image_tower if side == "image" else teacher.text_tower
    if "shrink" in entry:
        return _shrink(tower.config, entry["shrink"], f"student {student!r} {side} tower")
    config = dict(entry)
    if side == "image":
        return _fit_image(config, teacher.preprocess.image_size, student)
    return _fit_text(config, teacher, student)


def _fit_image(config: dict, image_size: int, student: str) -> dict:
    arch = config["arch"]
    if arch in _STEM_ARCHS and "stem" not in config:
        config["stem"] = "small" if image_size <= _SMALL_IMAGE else "standard"
    if arch == "vit":
        config["image_size"] = image_size
        config.setdefault("patch_size", _vit_patch(image_size, student))
    return config


def _vit_patch(image_size: int, student: str) -> int:
    # The smallest patch whose grid is at most 14 x 14: enough tokens for detail, few enough to be fast.
    for patch in (4, 7, 8, 14, 16, 32):
        if image_size % patch == 0 and image_size // patch <= 14:
            return patch
    raise ConfigError(f"student {student!r}: no ViT patch size fits {image_size} px images; set 'patch_size' in its image_tower")


def _fit_text(config: dict, teacher, student: str) -> dict:
    if config["arch"] != "bert":
        raise ConfigError(
            f"student {student!r}: a {config['arch']!r} text tower must be derived from the teacher "
            "with {'shrink': {...}}, since its vocabulary and positions come from the teacher's config"
        )
    tokenizer = teacher.tokenizer
    teacher_cfg = teacher.text_tower.config
    config["vocab_size"] = tokenizer.backend.get_vocab_size()
    config["pad_id"] = tokenizer.spec.pad_id
    config["max_position"] = max(int(teacher_cfg.get("max_position", 0)), tokenizer.spec.max_length)
    return config


def _fraction(shrink: dict, key: str, where: str) -> float:
    value = shrink.get(key, 1.0)
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{where}: shrink {key} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def _scaled(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def _heads(heads: int, hidden: int, width: float) -> tuple[int, int]:
    """Fewer heads of the same size, so heads can be inherited whole."""
    head_dim = hidden // heads
    kept = _scaled(heads, width)
    return kept, kept * head_dim


def _shrink(config: dict, shrink: dict, where: str) -> dict:
    unknown = sorted(set(shrink) - {"depth", "width"})
    if unknown:
        raise ConfigError(f"{where}: unknown shrink keys {unknown}; use 'depth' and 'width'")
    depth, width = _fraction(shrink, "depth", where), _fraction(shrink, "width", where)
    arch = config["arch"]
    if arch == "bert":
        heads, hidden = _heads(int(config.get("num_heads", 4)), int(config.get("hidden_size", 256)), width)
        intermediate = int(config.get("intermediate_size", 4 * int(config.get("hidden_size", 256))))
        return {
            **config, "num_layers": _scaled(int(config.get("num_layers", 4)), depth), "num_heads": heads,
            "hidden_size": hidden, "intermediate_size": _scaled(intermediate, width),
        }
    if arch == "vit":
        heads, hidden = _heads(int(config.get("num_heads", 3)), int(config.get("hidden_dim", 192)), width)
        mlp = int(config.get("mlp_dim", 4 * int(config.get("hidden_dim", 192))))
        return {
            **config, "num_layers": _scaled(int(config.get("num_layers", 4)), depth), "num_heads": heads,
            "hidden_dim": hidden, "mlp_dim": _scaled(mlp, width),
        }
    if arch in ("clip-text", "clip-vision"):
        return {**config, "hf_config": _shrink_hf(arch, config["hf_config"], depth, width)}
    if arch in _RESNET_BLOCKS or arch == "narrow_resnet":
        widths = config.get("widths", _RESNET_WIDTHS)
        blocks = config.get("blocks", _RESNET_BLOCKS.get(arch))
        return {
            "arch": "narrow_resnet", "widths": [_scaled(int(w), width) for w in widths],
            "blocks": [_scaled(int(b), depth) for b in blocks], "stem": config.get("stem", "small"),
        }
    if arch.startswith("mobilenet_v3"):
        if depth != 1:
            raise ConfigError(f"{where}: {arch} towers shrink in width only; set depth to 1 or pick another student")
        return {**config, "width_mult": float(config.get("width_mult", 1.0)) * width}
    raise ConfigError(f"{where}: cannot shrink a {arch!r} tower; name a concrete tower config instead")


def _shrink_hf(arch: str, hf_config: dict, depth: float, width: float) -> dict:
    # The stored dict may omit values equal to transformers' defaults: read them from a config object.
    from transformers import CLIPTextConfig, CLIPVisionConfig

    full = (CLIPTextConfig if arch == "clip-text" else CLIPVisionConfig)(**hf_config)
    heads, hidden = _heads(full.num_attention_heads, full.hidden_size, width)
    return {
        **hf_config,
        "num_hidden_layers": _scaled(full.num_hidden_layers, depth),
        "num_attention_heads": heads,
        "hidden_size": hidden,
        "intermediate_size": _scaled(full.intermediate_size, width),
    }
