"""Tokenization with the `tokenizers` library (no torch): one class for training, eval and runtimes."""

from __future__ import annotations

import heapq
import os
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from vledge.errors import CheckpointError, ConfigError

TOKENIZER_FILE = "tokenizer.json"
_TEMPLATE_TOKENS = re.compile(r"\{\{|\}\}|\{\}|[{}]")
_FILL = {"{{": "{", "}}": "}"}
# Texts are cut to this many characters per token position before tokenizing: tokenizing is linear in the
# text (a 10 MB string took 82 s) and only the first max_length tokens are kept. A token rarely spans more
# than a word, so only a text whose first max_length tokens need more characters than this (thousands of
# spaces or control characters between words) embeds differently from the text tokenized whole.
CHARS_PER_TOKEN = 64


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
    def from_bytes(cls, data: bytes, spec: TokenizerSpec, where: str) -> "TextTokenizer":
        """A tokenizer from the bytes of its ``tokenizer.json`` (read once by the caller); ``where`` names them."""
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"cannot read tokenizer {where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise CheckpointError(f"cannot read tokenizer {where}: {exc}") from None
        vocab = tok.get_vocab_size(with_added_tokens=True)
        if spec.pad_id >= vocab:
            raise CheckpointError(f"tokenizer {where} has {vocab} tokens, so its pad_id {spec.pad_id} is no token of it")
        return cls(tok, spec)

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
        texts = as_text_list(texts)
        limit = CHARS_PER_TOKEN * self.spec.max_length
        texts = [check_text(t[:limit] if isinstance(t, str) else t, f"text {i}") for i, t in enumerate(texts)]
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


def as_text_list(texts) -> list:
    """One string as a list of one; any other iterable (a list, a generator) as a list. Items are not checked."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise ConfigError("texts must be strings, got bytes; decode them first, e.g. data.decode('utf-8')")
    try:
        texts = list(texts)
    except TypeError:
        raise ConfigError(f"texts must be a string or a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ConfigError("no texts given")
    return texts


def check_text(text, what: str = "a text") -> str:
    """``text`` if it is a string that UTF-8 can encode (no lone surrogates); else a ConfigError naming ``what``."""
    if not isinstance(text, str):
        hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, (bytes, bytearray)) else ""
        raise ConfigError(f"{what} must be a string, got {type(text).__name__}{hint}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{what} {text[:40]!r} is not valid Unicode: a lone surrogate at character {exc.start}; "
            "decode text with errors='replace' (or fix the source) first"
        ) from None
    return text


def check_template(template) -> None:
    """A prompt template holds exactly one bare ``{}`` where the label goes; ``{{`` and ``}}`` stand for
    literal braces. Nothing else: a template is never given to ``str.format``, whose field specs
    (``{:>400000000}``) let a bundle's labels.json ask for gigabytes."""
    if not isinstance(template, str):
        raise ConfigError(f"prompt templates must be strings, got {type(template).__name__}: {template!r:.80}")
    check_text(template, "a prompt template")
    holes = 0
    for token in _TEMPLATE_TOKENS.findall(template):
        if token == "{}":
            holes += 1
        elif token in ("{", "}"):
            raise ConfigError(
                f"prompt template {template!r:.200} has a brace that is not a bare {{}}: a template takes the "
                "label at {} and nothing else; double any other brace, e.g. 'a photo of a {}.'"
            )
    if holes != 1:
        where = "has no {} for the label" if holes == 0 else f"has {holes} {{}} where one label goes"
        raise ConfigError(f"prompt template {template!r:.200} {where}, e.g. 'a photo of a {{}}.'")


def fill_template(template: str, name: str) -> str:
    """``template`` (checked by :func:`check_template`) with ``name`` at its ``{}``."""
    return _TEMPLATE_TOKENS.sub(lambda m: _FILL.get(m.group(), name), template)


def fill_templates(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every prompt template filled with every name, name-major; each template takes the name at ``{}``."""
    if isinstance(templates, (str, bytes)) or not isinstance(templates, Sequence):
        raise ConfigError("prompt templates must be a list of strings, e.g. ['a photo of a {}.']")
    if not templates:
        raise ConfigError("prompt templates are empty; pass at least one, e.g. ['a photo of a {}.']")
    for template in templates:
        check_template(template)
    return [fill_template(template, name) for name in names for template in templates]


def build_wordpiece(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 32) -> TextTokenizer:
    """Train a lower-cased BERT-style WordPiece tokenizer on ``texts``.

    The same texts give the same vocabulary in every process: the `tokenizers` trainer breaks ties between
    equally frequent merges in hash-map order, which changes from run to run, so the merges are learned here
    (the same algorithm: BPE merges over words, ``##`` marking a word's inner pieces, ties to the lowest ids).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: dict[str, int] = {}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[word] = words.get(word, 0) + 1
    tok = Tokenizer(models.WordPiece(_wordpiece_vocab(words, specials, vocab_size), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.add_special_tokens(specials)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return TextTokenizer(tok, TokenizerSpec("wordpiece", max_length, tok.token_to_id("[PAD]")))


def _wordpiece_vocab(words: dict[str, int], specials: list[str], vocab_size: int) -> dict[str, int]:
    """Token -> id: the specials, every character, every ``##`` inner character, then the most frequent
    merge of two adjacent pieces (ties: the lowest pair of ids) until ``vocab_size`` or nothing is left."""
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted({c for word in words for c in word}):
        vocab.setdefault(char, len(vocab))
    for char in sorted({c for word in words for c in word[1:]}):
        vocab.setdefault("##" + char, len(vocab))
    tokens = sorted(vocab, key=vocab.get)
    pieces = [[vocab[w[0]]] + [vocab["##" + c] for c in w[1:]] for w in words]
    counts = list(words.values())
    pairs: dict[tuple[int, int], int] = {}
    holders: dict[tuple[int, int], set[int]] = {}

    def count_pairs(w: int, sign: int) -> set[tuple[int, int]]:
        """Add (sign +1) or take away (-1) the adjacent pairs of word ``w``; the pairs it holds."""
        held = set(zip(pieces[w], pieces[w][1:]))
        for pair in zip(pieces[w], pieces[w][1:]):
            pairs[pair] = pairs.get(pair, 0) + sign * counts[w]
        for pair in held:
            if sign > 0:
                holders.setdefault(pair, set()).add(w)
            else:
                holders[pair].discard(w)
        return held

    for w in range(len(pieces)):
        count_pairs(w, +1)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while heap and len(vocab) < vocab_size:
        n, (a, b) = heapq.heappop(heap)
        if -n != pairs[(a, b)]:
            continue  # an outdated entry: the pair's current count was pushed when it changed
        right = tokens[b][2:] if tokens[b].startswith("##") else tokens[b]
        if tokens[a] + right not in vocab:
            vocab[tokens[a] + right] = len(vocab)
            tokens.append(tokens[a] + right)
        merged, changed = vocab[tokens[a] + right], set()
        for w in sorted(holders[(a, b)]):
            changed |= count_pairs(w, -1)
            out, i = [], 0
            while i < len(pieces[w]):
                if i + 1 < len(pieces[w]) and (pieces[w][i], pieces[w][i + 1]) == (a, b):
                    out.append(merged)
                    i += 2
                else:
                    out.append(pieces[w][i])
                    i += 1
            pieces[w] = out
            changed |= count_pairs(w, +1)
        for pair in sorted(changed):
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], pair))
    return vocab
