"""Hugging Face ``CLIPModel`` folders as vledge DualEncoders, and CLIP's towers in vledge's tower registries.

Only local folders are read, never the Hub, and never with ``trust_remote_code``. Weights come from
safetensors; pickle files (``pytorch_model.bin``) only when the caller opts in with ``allow_pickle``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from vledge.errors import CheckpointError
from vledge.images import PreprocessSpec
from vledge.models.checkpoint import CONFIG_FILE, PREPROCESS_FILE, load_safetensors, load_state, read_json
from vledge.models.dual_encoder import DualEncoder
from vledge.models.image_towers import IMAGE_TOWERS
from vledge.models.text_towers import TEXT_TOWERS
from vledge.text import TOKENIZER_FILE, TextTokenizer, TokenizerSpec

log = logging.getLogger(__name__)

SOURCE_KIND = "hf-clip"
# CLIPModel's parameter prefixes -> where they live in a DualEncoder built from ClipImageTower / ClipTextTower.
HF_TO_VLEDGE_PREFIXES = (
    ("vision_model.", "image_tower.backbone.vision_model."),
    ("visual_projection.", "image_tower.proj."),
    ("text_model.", "text_tower.encoder.text_model."),
    ("text_projection.", "text_tower.proj."),
)
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes in preprocessor_config.json
_DEFAULT_PAD = "<|endoftext|>"  # OpenAI's CLIP tokenizer pads with its EOS token
# Keys that say nothing about the architecture; dropped so tower configs stay small and stable.
_DROP_KEYS = ("transformers_version", "dtype", "torch_dtype", "architectures", "_name_or_path")


def _hf_config_dict(config: dict) -> dict:
    return {k: v for k, v in dict(config).items() if k not in _DROP_KEYS}


class ClipImageTower(nn.Module):
    """CLIP's vision transformer (CLS token, post-layernorm) then the visual projection.

    ``config = {"arch": "clip-vision", "hf_config": <CLIPVisionConfig dict>}``; the output equals
    ``CLIPModel.get_image_features`` (unnormalised).
    """

    def __init__(self, config: dict, embed_dim: int):
        from transformers import CLIPVisionConfig, CLIPVisionModel

        super().__init__()
        self.config = {"arch": "clip-vision", "hf_config": _hf_config_dict(config["hf_config"])}
        # Eager attention: plain ops that every exporter and the pruning code understand.
        hf = CLIPVisionConfig(**self.config["hf_config"], attn_implementation="eager")
        self.backbone = CLIPVisionModel(hf)
        self.proj = nn.Linear(hf.hidden_size, embed_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(pixel_values=pixel_values).pooler_output)


class ClipTextTower(nn.Module):
    """CLIP's causal text transformer, pooled at the EOS token, then the text projection.

    ``config = {"arch": "clip-text", "hf_config": <CLIPTextConfig dict>}``; the output equals
    ``CLIPModel.get_text_features`` (unnormalised). Pooling follows the config as transformers does:
    the first ``eos_token_id`` in each row, or (legacy configs with ``eos_token_id == 2``) the
    position of the largest id. Either way padding after the EOS changes nothing: attention is causal
    and the pooled position is the first EOS.
    """

    def __init__(self, config: dict, embed_dim: int):
        from transformers import CLIPTextConfig, CLIPTextModel

        super().__init__()
        self.config = {"arch": "clip-text", "hf_config": _hf_config_dict(config["hf_config"])}
        hf = CLIPTextConfig(**self.config["hf_config"], attn_implementation="eager")
        self.encoder = CLIPTextModel(hf)
        self.proj = nn.Linear(hf.hidden_size, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.proj(pooled)


IMAGE_TOWERS.register("clip-vision", ClipImageTower)
TEXT_TOWERS.register("clip-text", ClipTextTower)


def hf_key_to_vledge(key: str) -> str:
    """Map a ``CLIPModel`` parameter name to its name in a DualEncoder with CLIP towers."""
    for hf_prefix, vledge_prefix in HF_TO_VLEDGE_PREFIXES:
        if key.startswith(hf_prefix):
            return vledge_prefix + key[len(hf_prefix):]
    return key


def load_clip_folder(root: Path, allow_pickle: bool = False) -> DualEncoder:
    """Read a local Hugging Face ``CLIPModel`` folder into a DualEncoder (eval mode, float32).

    Needs config.json, model.safetensors (or a sharded index), tokenizer.json (or vocab.json +
    merges.txt) and preprocessor_config.json (CLIP's defaults if absent). ``allow_pickle`` lets a
    folder with only ``pytorch_model.bin`` load through ``torch.load(weights_only=True)``.
    """
    from transformers import CLIPConfig

    from vledge.models.size_check import build_checked

    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(
            f"{root} is not a local folder. vledge reads local Hugging Face CLIP folders only and never "
            "downloads from the Hub: download the model first (e.g. huggingface-cli download <repo> "
            "--local-dir <folder>) and pass that folder"
        )
    raw = read_json(root / CONFIG_FILE, "model config")
    try:
        config = CLIPConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE} is not a valid CLIP config: {exc}") from None
    try:
        embed_dim = int(config.projection_dim)
        image, text = build_checked(lambda: (ClipImageTower({"hf_config": config.vision_config.to_diff_dict()}, embed_dim),
                                             ClipTextTower({"hf_config": config.text_config.to_diff_dict()}, embed_dim)), root)
    except (TypeError, ValueError) as exc:  # e.g. a width that is not a number, heads that do not divide it
        raise CheckpointError(f"{root / CONFIG_FILE} is not a valid CLIP config: {exc}") from None
    model = DualEncoder(
        image, text,
        preprocess=read_clip_preprocess(root, int(config.vision_config.image_size)),
        tokenizer=read_clip_tokenizer(root, int(config.text_config.max_position_embeddings)),
        logit_scale=float(config.logit_scale_init_value),  # replaced by the checkpoint's value below
        source={"kind": SOURCE_KIND, "path": str(root), "config": raw},
    )
    state = read_hf_weights(root, "model.safetensors", "pytorch_model.bin", allow_pickle)
    # Older checkpoints store the position_ids buffers, which transformers no longer persists.
    state = {hf_key_to_vledge(k): v for k, v in state.items() if not k.endswith("embeddings.position_ids")}
    load_state(model, state, root)
    model.eval()
    log.info("loaded Hugging Face CLIP from %s (embed_dim %d)", root, embed_dim)
    return model


def read_hf_weights(root: Path, safe_name: str, pickle_name: str, allow_pickle: bool) -> dict:
    """A state dict from ``safe_name`` (or its sharded ``.index.json``); ``pickle_name`` only if allowed."""
    for name, reader in ((safe_name, load_safetensors), (pickle_name, _load_pickle_weights)):
        single, index = root / name, root / f"{name}.index.json"
        if not (single.is_file() or index.is_file()):
            continue
        if reader is _load_pickle_weights and not allow_pickle:
            raise CheckpointError(
                f"{root} holds only pickle weights ({single.name if single.is_file() else index.name}). "
                "vledge does not unpickle files by default, since unpickling can run code. Convert them to "
                f"safetensors ({safe_name}), or if you trust the file pass allow_pickle=True (--allow-pickle) to load "
                "it with torch.load(weights_only=True)"
            )
        if single.is_file():
            return reader(single)
        state = {}
        for shard in _shard_names(index):
            state.update(reader(root / shard))
        return state
    raise CheckpointError(
        f"no weights found in {root}: expected {safe_name} (or {safe_name}.index.json with its shards)"
    )


def _shard_names(index: Path) -> list[str]:
    weight_map = read_json(index, "sharded weights index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no weight_map")
    shards = sorted(set(weight_map.values()))
    bad = [s for s in shards if not isinstance(s, str) or Path(s).name != s]
    if bad:
        raise CheckpointError(f"{index} names shards outside its folder: {bad[:3]}")
    return shards


def _load_pickle_weights(path: Path) -> dict:
    import pickle

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message goes on to suggest weights_only=False, which is exactly what must not be done.
        reason = next((line.strip() for line in str(exc).splitlines() if "unsupported" in line.lower()), "")
        raise CheckpointError(
            f"refusing {path}: it holds objects other than tensors, which torch.load(weights_only=True) will not "
            f"unpickle ({reason or 'not a plain state dict'}). Unpickling them could run code: convert the file to "
            "safetensors in a place you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {path}: it is truncated, corrupt or holds more than tensors ({exc})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def read_clip_tokenizer(root: Path, max_length: int) -> TextTokenizer:
    """CLIP's byte-level BPE: tokenizer.json, or built locally from vocab.json + merges.txt."""
    pad_token = _special_token(root, "pad_token") or _DEFAULT_PAD
    if (root / TOKENIZER_FILE).is_file():
        # The pad id comes from the vocabulary: read the file first, set the real spec below.
        backend = TextTokenizer.from_file(root / TOKENIZER_FILE, TokenizerSpec("bpe", max_length, 0)).backend
    elif (root / "vocab.json").is_file() and (root / "merges.txt").is_file():
        from transformers import CLIPTokenizerFast

        try:
            backend = CLIPTokenizerFast.from_pretrained(str(root), local_files_only=True).backend_tokenizer
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"cannot build the CLIP tokenizer from {root}/vocab.json and merges.txt: {exc}"
            ) from None
    else:
        raise CheckpointError(f"no tokenizer in {root}: expected {TOKENIZER_FILE}, or vocab.json and merges.txt")
    pad_id = backend.token_to_id(pad_token)
    if pad_id is None:
        raise CheckpointError(f"the tokenizer in {root} has no id for its pad token {pad_token!r}")
    return TextTokenizer(backend, TokenizerSpec("bpe", max_length, int(pad_id)))


def _special_token(root: Path, name: str) -> str | None:
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        if (root / file).is_file():
            value = read_json(root / file, "tokenizer config").get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
    return None


def read_clip_preprocess(root: Path, image_size: int) -> PreprocessSpec:
    """preprocessor_config.json (CLIPImageProcessor) -> PreprocessSpec; CLIP's defaults when absent."""
    path = root / PREPROCESS_FILE
    if not path.is_file():
        log.warning("%s not found: using CLIP's defaults (bicubic, crop %d px, OpenAI mean and std)", path, image_size)
        return PreprocessSpec(image_size=image_size)
    try:
        return _clip_preprocess(read_json(path, "preprocessing config"), path, image_size)
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError) as exc:  # ValueError includes PreprocessSpec's ConfigError
        raise CheckpointError(f"{path} has a malformed field: {exc!r}") from None


def _clip_preprocess(cfg: dict, path: Path, image_size: int) -> PreprocessSpec:
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if cfg.get(flag, True) is not True:
            raise CheckpointError(
                f"{path}: {flag} is {cfg[flag]!r}; vledge's preprocessing always resizes the shortest edge, "
                "centre-crops, rescales by 1/255 and normalises. Edit the file if the model was trained that way"
            )
    if not math.isclose(float(cfg.get("rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-6):
        raise CheckpointError(f"{path}: rescale_factor {cfg['rescale_factor']} is not 1/255, which vledge assumes")
    crop = _square_edge(cfg.get("crop_size", image_size), path, "crop_size")
    if crop != image_size:
        raise CheckpointError(f"{path}: crop_size {crop} differs from the vision config's image_size {image_size}")
    size = cfg.get("size", crop)
    if isinstance(size, dict) and "shortest_edge" not in size:
        raise CheckpointError(
            f"{path}: size {size} resizes to a fixed height and width; vledge resizes the shortest edge "
            "({'shortest_edge': N}) and centre-crops"
        )
    resize_to = int(size["shortest_edge"]) if isinstance(size, dict) else int(size)
    resample = cfg.get("resample", 3)
    if resample not in _RESAMPLE:
        raise CheckpointError(f"{path}: resample {resample!r} is not supported; use 3 (bicubic) or 2 (bilinear)")
    return PreprocessSpec(
        image_size=crop, resize_to=resize_to, interpolation=_RESAMPLE[resample],
        **{k: tuple(cfg[f"image_{k}"]) for k in ("mean", "std") if f"image_{k}" in cfg},
    )


def _square_edge(value, path: Path, field: str) -> int:
    if isinstance(value, dict):
        height, width = value.get("height"), value.get("width")
        if height != width or height is None:
            raise CheckpointError(f"{path}: {field} {value} is not square; vledge crops square images")
        return int(height)
    return int(value)
