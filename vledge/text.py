"""Tokenization with the `tokenizers` library (no torch): one class for training, eval and runtimes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from vledge.errors import CheckpointError, ConfigError

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerSpec:
    """What a bundle or checkpoint records about its tokenizer."""

    kind: str  # "wordpiece" (vledge BERT) | "bpe" (CLIP)
    max_length: int
    pad_id: int
    file: str = TOKENIZER_FILE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerSpec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class TextTokenizer:
    """Turns texts into ``input_ids`` and ``attention_mask`` int64 arrays.

    Texts longer than ``max_length`` are truncated (special tokens kept). ``pad_to_max`` pads every
    batch to ``max_length`` (static shapes); otherwise to the longest text in the batch.
    """

    def __init__(self, tokenizer, spec: TokenizerSpec):
        self.spec = spec
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.enable_truncation(spec.max_length)

    @classmethod
    def from_file(cls, path: str | os.PathLike, spec: TokenizerSpec) -> "TextTokenizer":
        from tokenizers import Tokenizer

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"tokenizer file not found: {path}")
        try:
            tok = Tokenizer.from_file(path)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise CheckpointError(f"cannot read tokenizer {path}: {exc}") from None
        return cls(tok, spec)

    @property
    def backend(self):
        return self._tok

    def __call__(self, texts: str | Sequence[str], pad_to_max: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ConfigError("no texts given")
        if not all(isinstance(t, str) for t in texts):
            raise ConfigError("texts must be strings")
        encodings = self._tok.encode_batch(texts)
        width = self.spec.max_length if pad_to_max else max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), width), self.spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return ids, mask

    def save(self, folder: str | os.PathLike) -> str:
        path = os.path.join(os.fspath(folder), self.spec.file)
        self._tok.save(path)
        return path


def fill_templates(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every prompt template filled with every name, name-major; each template takes the name at ``{}``."""
    if isinstance(templates, str) or not all(isinstance(t, str) for t in templates):
        raise ConfigError("prompt templates must be a list of strings, e.g. ['a photo of a {}.']")
    for template in templates:
        try:
            filled = template.format("\0")
        except (IndexError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"prompt template {template!r} cannot be filled ({type(exc).__name__}: {exc}); put {{}} where the "
                "label goes and double any other brace, e.g. 'a photo of a {}.'"
            ) from None
        if "\0" not in filled:
            raise ConfigError(f"prompt template {template!r} has no {{}} for the label, e.g. 'a photo of a {{}}.'")
    return [template.format(name) for name in names for template in templates]


def build_wordpiece(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 32) -> TextTokenizer:
    """Train a lower-cased BERT-style WordPiece tokenizer on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, min_frequency=1, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return TextTokenizer(tok, TokenizerSpec("wordpiece", max_length, tok.token_to_id("[PAD]")))
