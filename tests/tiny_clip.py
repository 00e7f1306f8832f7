"""A tiny Hugging Face CLIPModel folder (random weights, local BPE tokenizer), well under 1 MB.

Laid out like a hub download: config.json, model.safetensors, tokenizer files, preprocessor_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# A handful of merges so common words become single tokens; everything else falls back to bytes.
_WORDS = ["a", "photo", "of", "the", "cat", "dog", "shirt", "shoe", "bag", "coat", "dress"]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 16
IMAGE_SIZE = 30
RESIZE_TO = 34


def _bpe_files(folder: Path) -> None:
    """vocab.json and merges.txt in CLIP's layout: bytes, bytes + "</w>", merged tokens, then BOS and EOS last."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    merges = []
    for word in _WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:  # merge left to right: "p h" -> "ph", "ph o" -> "pho", ...
            merges.append(f"{symbols[0]} {symbols[1]}")
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            if symbols[0] not in vocab:
                vocab.append(symbols[0])
    merges = list(dict.fromkeys(merges))
    vocab += [BOS, EOS]  # EOS has the highest id, as in OpenAI's CLIP (legacy argmax pooling relies on it)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def make_tiny_clip_folder(path, seed: int = 0, width: int = 32, layers: int = 2) -> Path:
    """Write a seeded random ``CLIPModel`` with its tokenizer and image processor to ``path``.

    ``width`` and ``layers`` size both towers (hidden size, MLP 2x wider); at the default the graphs'
    own bytes outweigh the weights, so size ratios need a wider one."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    _bpe_files(root)
    tokenizer = CLIPTokenizerFast(
        vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"), model_max_length=MAX_LENGTH,
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers,
            "num_attention_heads": 2, "max_position_embeddings": MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers, "num_attention_heads": 2,
            "image_size": IMAGE_SIZE, "patch_size": 6,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        # CLIP's init leaves biases at 0 and norms at 1: jitter everything so a misplaced weight shows.
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
        model.logit_scale.fill_(3.0)  # not the config's init value, so loaders must read the weights
    model.save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root)
    CLIPImageProcessor(
        size={"shortest_edge": RESIZE_TO}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
    ).save_pretrained(root)
    return root
