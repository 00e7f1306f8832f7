"""The WordPiece tokenizer vledge trains for its own text towers (vledge.text.build_wordpiece)."""

import json
import os
import subprocess
import sys

from vledge.data.base import DEFAULT_TEMPLATES
from vledge.data.fashion_mnist import CLASSES
from vledge.text import build_wordpiece

TEXTS = [t.format(c) for c in CLASSES for t in DEFAULT_TEMPLATES] + ["an emoji 🙂 and ümlauts", "Sneaker, sneakers!"]

BUILD = """
import sys
from vledge.text import build_wordpiece
texts = [line for line in sys.stdin.read().split("\\n") if line]
sys.stdout.write(build_wordpiece(texts, vocab_size=150, max_length=16).backend.to_str())
"""


def built_in_a_process(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    run = subprocess.run([sys.executable, "-c", BUILD], input="\n".join(TEXTS), capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_the_same_texts_give_the_same_tokenizer_in_every_process():
    # Two processes with different string hashing: the vocabulary, its ids and the whole file are the same.
    first, second = built_in_a_process("1"), built_in_a_process("2")
    assert first == second
    assert json.loads(first)["model"]["vocab"] == build_wordpiece(TEXTS, vocab_size=150, max_length=16).backend.get_vocab()


def test_frequent_words_become_single_tokens_and_rare_ones_split_into_inner_pieces():
    tok = build_wordpiece(TEXTS, vocab_size=120, max_length=16)  # fewer tokens than the words need: merging stops
    vocab = tok.backend.get_vocab()
    assert [vocab[s] for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert {"photo", "shirt", "##s"} <= set(vocab) and len(vocab) == 120
    assert tok.backend.encode("A photo of a Shirt").tokens == ["[CLS]", "a", "photo", "of", "a", "shirt", "[SEP]"]
    assert tok.backend.encode("umlaut").tokens[1:-1] == ["u", "##m", "##la", "##ut"]  # accents stripped, pieces
    assert tok.backend.encode("a ☃").tokens == ["[CLS]", "a", "[UNK]", "[SEP]"]  # a character never seen
    ids, mask = tok(["a photo", "a photo of a shirt"])
    assert ids.shape == mask.shape == (2, 7) and ids[0, 4] == tok.spec.pad_id and mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0]


def test_merging_stops_when_every_word_is_one_token():
    tok = build_wordpiece(["abc abc", "ab"], vocab_size=1000)
    vocab = tok.backend.get_vocab()
    assert set(vocab) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##b", "##c", "ab", "abc"}
    assert tok.backend.encode("abc ab").tokens[1:-1] == ["abc", "ab"]
