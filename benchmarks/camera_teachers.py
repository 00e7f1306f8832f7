"""Write the camera-sized teachers: RANDOM WEIGHTS, FOR TIMING ONLY.

Nothing can be downloaded here, so these are the architectures users bring, with random weights:
- ``clip-vit-b32``, ``clip-vit-b16``: Hugging Face ``CLIPModel`` folders (``save_pretrained``) in the
  configurations of openai/clip-vit-base-patch32 and -patch16 (224 px, 77 tokens, text width 512, 12
  layers a tower, 49,408-token vocabulary), with a CLIP tokenizer and image processor, as a download has;
- ``resnet50-bert-base``: a vledge checkpoint, resnet50 (ImageNet stem) + BERT-base, 224 px, 77 tokens;
- ``tiny-clip-224``: the tests' 224-px CLIP (under 1 MB), the same code paths at toy size.

The tokenizers are built here: a byte-level BPE learned over a small local corpus (class names, prompt
templates), its vocabulary filled with unreachable tokens up to the real size so the embedding tables have
their real shapes. Every folder gets ``camera_teacher.json`` and the cache root a README, both saying the
weights are random: any accuracy from these models means nothing.

    .venv/bin/python benchmarks/camera_teachers.py [--out DIR] [--only clip-vit-b32 ...] [--check]

Folders are cached (default ~/.cache/vledge/camera-teachers) and rebuilt only when their recipe changes;
never write them into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from pathlib import Path

from vledge.compress.students.reference import REFERENCE_TEACHERS, TeacherSpec, text_tower_config

log = logging.getLogger("camera_teachers")

DEFAULT_ROOT = Path.home() / ".cache" / "vledge" / "camera-teachers"
CAMERA_TEACHERS = ("clip-vit-b32", "clip-vit-b16", "resnet50-bert-base")
TEST_TEACHER = "tiny-clip-224"
RECIPE_VERSION = 1
WEIGHTS_NOTE = "random weights: timing only; accuracy from this model means nothing"
MARKER = "camera_teacher.json"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CORPUS_WORDS = (
    "a photo of the picture black and white close up low resolution image showing an on in with "
    "t-shirt trouser pullover dress coat sandal shirt sneaker bag ankle boot person car bicycle dog cat "
    "truck bus street road door window parcel package delivery camera night day empty room"
).split()


def learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """CLIP-style BPE merges (last symbol of a word ends in ``</w>``): the most frequent pair first, ties by name."""
    corpus = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: dict[tuple[str, str], int] = {}
        for symbols in corpus:
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + 1
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for symbols in corpus:
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
                i += 1
    return merges


def write_bpe(folder: Path, vocab_size: int) -> None:
    """vocab.json + merges.txt of exactly ``vocab_size`` tokens, BOS and EOS last (EOS the highest id, as in CLIP)."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    merges = learn_merges(list(CORPUS_WORDS), 400)
    vocab += list(dict.fromkeys(a + b for a, b in merges if a + b not in vocab))
    if len(vocab) + 2 > vocab_size:
        raise SystemExit(f"vocabulary of {vocab_size} is too small for the {len(vocab) + 2} learned tokens")
    # Unreachable fillers: no merge produces them, they only give the embedding table its real size.
    vocab += [f"<|unused{i}|>" for i in range(vocab_size - 2 - len(vocab))] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def write_clip_folder(spec: TeacherSpec, folder: Path, seed: int) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    write_bpe(folder, spec.vocab_size)
    tokenizer = CLIPTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                                  model_max_length=spec.max_length)
    text = {**spec.text_tower["hf_config"], "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(text_config=text, vision_config=spec.image_tower["hf_config"], projection_dim=spec.embed_dim)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": spec.image_size}, resample=3,
                       crop_size={"height": spec.image_size, "width": spec.image_size}).save_pretrained(folder)


def write_vledge_folder(spec: TeacherSpec, folder: Path, seed: int) -> None:
    import torch

    import vledge.models  # noqa: F401  registers every tower
    from vledge.data.base import DEFAULT_TEMPLATES
    from vledge.data.fashion_mnist import CLASSES
    from vledge.images import PreprocessSpec
    from vledge.models import save_dual_encoder
    from vledge.models.dual_encoder import DualEncoder
    from vledge.models.image_towers import build_image_tower
    from vledge.models.text_towers import build_text_tower
    from vledge.text import build_wordpiece

    prompts = [t.format(c) for c in CLASSES for t in DEFAULT_TEMPLATES] + [" ".join(CORPUS_WORDS)]
    tokenizer = build_wordpiece(prompts, vocab_size=spec.vocab_size, max_length=spec.max_length)
    text_cfg = {**text_tower_config(spec), "pad_id": tokenizer.spec.pad_id}
    torch.manual_seed(seed)
    model = DualEncoder(
        build_image_tower(spec.image_tower, spec.embed_dim), build_text_tower(text_cfg, spec.embed_dim),
        preprocess=PreprocessSpec(image_size=spec.image_size, mean=spec.mean, std=spec.std), tokenizer=tokenizer,
        labels={"classes": list(CLASSES), "templates": list(DEFAULT_TEMPLATES)},
        source={"kind": "vledge-dual-encoder"},
    ).eval()
    save_dual_encoder(model, folder, extra={"weights": WEIGHTS_NOTE})


def recipe(spec: TeacherSpec, seed: int) -> dict:
    from dataclasses import asdict

    body = {"version": RECIPE_VERSION, "seed": seed, "spec": asdict(spec)}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def build_teacher(name: str, root: Path = DEFAULT_ROOT, seed: int = 0) -> Path:
    """The folder of teacher ``name`` under ``root``, written unless a folder of the same recipe is there."""
    spec = REFERENCE_TEACHERS.get(name)
    folder = root / name
    wanted = recipe(spec, seed)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("recipe", {}).get("sha256") == wanted["sha256"]:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("writing %s (%s) to %s", name, spec.description, folder)
    writer = write_clip_folder if spec.image_tower["arch"] == "clip-vision" else write_vledge_folder
    writer(spec, staging, seed)
    (staging / MARKER).write_text(json.dumps({"name": name, "weights": WEIGHTS_NOTE, "recipe": wanted}, indent=2) + "\n")
    staging.rename(folder)
    write_readme(root)
    return folder


def write_readme(root: Path) -> None:
    names = sorted(p.parent.name for p in root.glob(f"*/{MARKER}"))
    lines = ["# vledge camera teachers: RANDOM WEIGHTS, TIMING ONLY", "",
             "Written by benchmarks/camera_teachers.py. The weights are random (nothing can be downloaded where",
             "they were made): use them to time towers, never to measure accuracy.", ""]
    lines += [f"- `{n}`: {REFERENCE_TEACHERS.get(n).description}" for n in names]
    (root / "README.md").write_text("\n".join(lines) + "\n")
    (root / "teachers.json").write_text(json.dumps({"weights": WEIGHTS_NOTE, "teachers": names}, indent=2) + "\n")


def check_teacher(folder: Path) -> dict:
    """Load ``folder`` with ``vledge.models.load_teacher`` and embed one image and one prompt."""
    import numpy as np
    import torch

    from vledge.models import load_teacher

    model = load_teacher(folder)
    size = model.preprocess.image_size
    with torch.no_grad():
        image = model.encode_image(model.pixels(np.zeros((size, size, 3), np.uint8)))
        text = model.encode_text(*model.tokenize(["a photo of a bag."]))
    return {"folder": str(folder), "params": sum(p.numel() for p in model.parameters()), "image_size": size,
            "max_length": model.tokenizer.spec.max_length, "embed_dim": int(image.shape[1]),
            "text_embed_dim": int(text.shape[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT, help=f"cache folder (default {DEFAULT_ROOT})")
    parser.add_argument("--only", nargs="+", default=list(CAMERA_TEACHERS),
                        choices=[*CAMERA_TEACHERS, TEST_TEACHER], help="teachers to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="load each folder with vledge's load_teacher")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.only:
        folder = build_teacher(name, args.out, args.seed)
        print(json.dumps(check_teacher(folder)) if args.check else folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
