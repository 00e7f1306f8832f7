"""LoRA adapters (PEFT) on a DualEncoder: add them for training, save them, and merge them into the base weights.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's layout).
Adapters trained with PEFT on a plain Hugging Face ``CLIPModel`` also merge onto the DualEncoder that
``load_clip_folder`` builds from the same folder: their module names are mapped onto vledge's towers.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

from torch import nn

from vledge.errors import CheckpointError, ConfigError
from vledge.models.base_model import load_base_model
from vledge.models.checkpoint import read_json, save_safetensors
from vledge.models.dual_encoder import DualEncoder
from vledge.models.hf_clip import HF_TO_VLEDGE_PREFIXES, read_hf_weights

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
_PEFT_PREFIX = "base_model.model."  # PEFT's prefix on every saved adapter key

# Attention projections that get LoRA by default, per tower arch. Towers not listed here (the CNN
# towers resnet* / mobilenet_v3_*, and torchvision's "vit", whose attention is one fused
# nn.MultiheadAttention) get LoRA on their output projection ``proj`` only: the backbone stays frozen.
ATTENTION_TARGETS = {
    "bert": ("query", "value"),
    "clip-text": ("q_proj", "v_proj"),
    "clip-vision": ("q_proj", "v_proj"),
}


def default_target_modules(model: DualEncoder) -> list[str]:
    """Full names of the Linear layers ``add_lora`` adapts: attention query/value where known, and both ``proj``."""
    names = []
    for tower_name in ("image_tower", "text_tower"):
        tower = getattr(model, tower_name)
        suffixes = ATTENTION_TARGETS.get(tower.config.get("arch"), ())
        names += [
            f"{tower_name}.{name}" for name, module in tower.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in suffixes
        ]
        names.append(f"{tower_name}.proj")
    return names


def add_lora(model: DualEncoder, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None):
    """Wrap ``model`` in a PEFT LoRA model for training; only the LoRA weights stay trainable.

    ``target_modules`` takes PEFT's forms (module names or suffixes, or one regex); by default
    :func:`default_target_modules`. The base model's modules are replaced in place.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ConfigError(f"LoRA rank r must be at least 1, got {r}")
    targets = default_target_modules(model) if target_modules is None else target_modules
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT's "Target modules ... not found in the base model"
        raise ConfigError(f"cannot add LoRA with target_modules {targets}: {exc}") from None


def save_adapter(peft_model, out_dir: str | os.PathLike, base_path: str | os.PathLike) -> Path:
    """Write ``adapter_config.json`` (naming the absolute ``base_path``) and ``adapter_model.safetensors``."""
    from peft import get_peft_model_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(peft_model.peft_config["default"])
    config.base_model_name_or_path = str(Path(base_path).resolve())
    config.inference_mode = True
    if isinstance(config.target_modules, set):
        config.target_modules = sorted(config.target_modules)  # a stable file
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}
    save_safetensors(state, out / ADAPTER_WEIGHTS)
    config.save_pretrained(str(out))  # writes adapter_config.json only
    return out


def load_adapter_folder(root: Path, allow_pickle: bool = False) -> DualEncoder:
    """Load the base model an adapter folder names (a local folder), then merge the adapter into it."""
    root = Path(root)
    base = read_json(root / ADAPTER_CONFIG, "adapter config").get("base_model_name_or_path")
    base_path = Path(base) if isinstance(base, str) and base else None
    if base_path is not None and not base_path.is_absolute():
        base_path = root / base_path
    if base_path is None or not base_path.is_dir():
        raise CheckpointError(
            f"adapter {root} names base model {base!r} in {ADAPTER_CONFIG}, which is not a local folder. "
            "vledge loads local folders only and never downloads from the Hub: download the base model and "
            f"pass it explicitly, e.g. vledge.models.load_teacher(<base folder>, adapter={str(root)!r})"
        )
    return merge_adapter_(load_base_model(base_path, allow_pickle), root, allow_pickle=allow_pickle)


def merge_adapter_(model: DualEncoder, adapter_dir: Path, *, allow_pickle: bool = False) -> DualEncoder:
    """Merge the LoRA adapter in ``adapter_dir`` into ``model``'s weights; returns the same plain DualEncoder.

    Raises CheckpointError when the adapter's modules or shapes do not match the model; the model is
    then left as it was.
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise CheckpointError(f"adapter folder not found: {adapter_dir}")
    config = _read_lora_config(adapter_dir)
    weights = read_hf_weights(adapter_dir, ADAPTER_WEIGHTS, ADAPTER_PICKLE, allow_pickle)
    state = {_to_vledge_key(k): v for k, v in weights.items()}
    mismatch = _mismatch(adapter_dir, model)
    wanted = config.target_modules
    _resolve_targets_(config, model)
    if not config.target_modules:
        listed = sorted(wanted) if isinstance(wanted, set) else wanted
        raise mismatch(f"none of its target modules {listed!r} is in the base")
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}  # PEFT freezes the base
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise mismatch(f"its target modules cannot take LoRA layers ({exc})") from None
    try:
        expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
        for key, tensor in state.items():
            if key not in expected:
                raise mismatch(f"module {_module_of(key)} is not in the base model or not targeted by {ADAPTER_CONFIG}")
            if tuple(tensor.shape) != expected[key]:
                raise mismatch(
                    f"{_module_of(key)} has shape {tuple(tensor.shape)} in the adapter but {expected[key]} in the base"
                )
        absent = sorted(set(expected) - set(state))
        if absent:
            raise mismatch(f"the base module {_module_of(absent[0])} is targeted but has no adapter weights")
        set_peft_model_state_dict(peft_model, state)
    except CheckpointError:
        _restore_grad_(peft_model.unload(), trainable)  # take the injected LoRA layers out again
        raise
    merged = _restore_grad_(peft_model.merge_and_unload(), trainable)
    merged.source = {**merged.source, "adapter": str(adapter_dir)}
    log.info("merged LoRA adapter %s (r=%s, %d tensors)", adapter_dir, config.r, len(state))
    return merged.eval()


def _read_lora_config(adapter_dir: Path):
    from peft import PeftConfig

    path = adapter_dir / ADAPTER_CONFIG
    raw = read_json(path, "adapter config")
    if raw.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: peft_type {raw.get('peft_type')!r}; vledge merges LoRA adapters only")
    raw.pop("runtime_config", None)
    try:
        config = PeftConfig.from_peft_type(**raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid LoRA config: {exc}") from None
    if not config.target_modules:
        raise CheckpointError(f"{path} lists no target_modules; vledge merges adapters on named modules only")
    for name, value in (("r", config.r), ("lora_alpha", config.lora_alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise CheckpointError(f"{path}: {name} must be a positive number, got {value!r}")
    config.task_type = None  # a task head wrapper is not needed to merge
    config.base_model_name_or_path = None  # PEFT warns when it differs from the model's (absent) name
    config.inference_mode = True
    return config


def _restore_grad_(model: DualEncoder, trainable: dict) -> DualEncoder:
    for name, param in model.named_parameters():
        param.requires_grad_(trainable.get(name, True))
    return model


def _rename(name: str, hf_to_vledge: bool) -> str:
    """Map a module name between CLIPModel's layout (``text_model.…``, ``visual_projection``) and vledge's."""
    for hf_prefix, vledge_prefix in HF_TO_VLEDGE_PREFIXES:
        src, dst = (hf_prefix, vledge_prefix) if hf_to_vledge else (vledge_prefix, hf_prefix)
        if name == src.rstrip(".") or name.startswith(src):
            return dst.rstrip(".") + name[len(src.rstrip(".")):]
    return name


def _to_vledge_key(key: str) -> str:
    if key.startswith(_PEFT_PREFIX):
        return _PEFT_PREFIX + _rename(key[len(_PEFT_PREFIX):], hf_to_vledge=True)
    return key


def _resolve_targets_(config, model: DualEncoder) -> None:
    """Replace the config's target patterns by the model modules they select, under either naming."""
    from peft.tuners.tuners_utils import check_target_module_exists

    config.target_modules = [
        name for name, _ in model.named_modules()
        if name and (check_target_module_exists(config, name)
                     or check_target_module_exists(config, _rename(name, hf_to_vledge=False)))
    ]
    config.exclude_modules = config.layers_to_transform = config.layers_pattern = None  # already applied


def _module_of(key: str) -> str:
    name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
    return re.sub(r"\.(lora_\w+|base_layer)(\.\w+)*$", "", name)


def _mismatch(adapter_dir: Path, model: DualEncoder):
    base = model.source.get("path", f"<{type(model).__name__} in memory>")

    def error(detail: str) -> CheckpointError:
        return CheckpointError(f"adapter {adapter_dir} does not match base {base}: {detail}")

    return error


__all__ = ["add_lora", "default_target_modules", "load_adapter_folder", "merge_adapter_", "save_adapter"]
