"""A transformers-made CLIP teacher for the distillation recipe benchmark: a ``CLIPModel`` folder written with
``save_pretrained`` (local BPE tokenizer, Fashion-MNIST preprocessing), trained on Fashion-MNIST to a real
zero-shot accuracy with vledge's own loss and loader, and cached outside the repository.

``vledge train`` builds vledge's own towers with a WordPiece tokenizer and writes a vledge checkpoint, so it
cannot train a Hugging Face CLIP folder: the loop here is a short plain-torch one over
``vledge.train.losses.joint_loss`` (the loss ``vledge train`` uses), on the model ``load_clip_folder`` reads.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from vledge.data.base import ImageTextDataset
from vledge.models.hf_clip import HF_TO_VLEDGE_PREFIXES, load_clip_folder
from vledge.train.losses import joint_loss
from vledge.train.schedule import warmup_cosine

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 24
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel statistics


def _words(data: ImageTextDataset) -> list[str]:
    texts = [t.format(c) for c in data.classes for t in data.templates]
    return sorted({w for text in texts for w in text.replace("-", " ").replace(".", " ").split()})


def _bpe_files(folder: Path, words: list[str]) -> None:
    """vocab.json and merges.txt in CLIP's layout, with merges that make every prompt word one token."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    merges = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merges.append(f"{symbols[0]} {symbols[1]}")
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            if symbols[0] not in vocab:
                vocab.append(symbols[0])
    vocab += [BOS, EOS]  # EOS last, as in OpenAI's CLIP
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def write_untrained_folder(root: Path, data: ImageTextDataset, *, width: int, layers: int, heads: int,
                           patch: int, image_size: int, embed_dim: int, seed: int) -> None:
    """A freshly initialised CLIPModel folder, as a user's ``save_pretrained`` would write it."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    _bpe_files(root, _words(data))
    tokenizer = CLIPTokenizerFast(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"),
                                  model_max_length=MAX_LENGTH)
    tower = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers, "num_attention_heads": heads}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": MAX_LENGTH,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**tower, "image_size": image_size, "patch_size": patch},
        projection_dim=embed_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                       resample=3, image_mean=[MEAN] * 3, image_std=[STD] * 3).save_pretrained(root)


def _save_weights(model, root: Path) -> None:
    """The trained DualEncoder's weights back into the folder's CLIPModel, under transformers' own names."""
    from transformers import CLIPModel

    back = [(v, h) for h, v in HF_TO_VLEDGE_PREFIXES]
    state = {}
    for key, value in model.state_dict().items():
        name = next((h + key[len(v):] for v, h in back if key.startswith(v)), key)
        state[name] = value
    hf = CLIPModel.from_pretrained(root)
    hf.load_state_dict(state, strict=True)
    hf.save_pretrained(root, safe_serialization=True)


def train_teacher(root: Path, data: ImageTextDataset, *, images: int, epochs: int, batch_size: int, lr: float,
                  contrastive_weight: float, seed: int) -> dict:
    """Train the folder's model in place (contrastive + class cross-entropy, AdamW, warm-up then cosine)."""
    model = load_clip_folder(root)
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(data))[:images]
    steps = epochs * (len(pool) // batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, max(1, steps // 20)))
    prompts = [t.format(c) for c in data.classes for t in data.templates]
    tokens = model.tokenize(prompts)
    torch.manual_seed(seed)
    start, losses = time.perf_counter(), []
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(pool)
        for i in range(len(pool) // batch_size):
            batch = data.batch(order[i * batch_size:(i + 1) * batch_size], model.preprocess, variant=epoch)
            pixels = torch.from_numpy(batch.pixels)
            pixels = torch.where(torch.rand(len(pixels))[:, None, None, None] < 0.5, pixels.flip(-1), pixels)
            image = model.encode_image(pixels)
            text_all = model.encode_text(*tokens)
            per_class = text_all.view(len(data.classes), len(data.templates), -1)
            class_emb = torch.nn.functional.normalize(per_class.mean(1), dim=-1)
            captions = [prompts.index(c) for c in batch.captions]
            scale = model.logit_scale.exp().clamp(max=100.0)
            loss, _ = joint_loss(image, text_all[captions], scale, class_embeds=class_emb,
                                 labels=torch.from_numpy(batch.labels), contrastive_weight=contrastive_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    model.eval()
    _save_weights(model, root)
    return {"seconds": round(time.perf_counter() - start, 1), "steps": steps, "images": int(len(pool)),
            "epochs": epochs, "lr": lr, "final_loss": round(float(np.mean(losses[-10:])), 4),
            "logit_scale": round(math.exp(float(model.logit_scale.detach())), 2)}
