import numpy as np
import pytest

from vledge.data.base import ImageTextDataset
from vledge.errors import ConfigError
from vledge.evaluate import class_embeddings, evaluate, format_report, recall_at_k
from vledge.images import PreprocessSpec


def test_recall_at_k_on_known_rankings():
    eye = np.eye(4, dtype=np.float32)
    assert recall_at_k(eye, eye, ks=(1,)) == {"i2t@1": 1.0, "t2i@1": 1.0}
    shifted = np.roll(eye, 1, axis=0)  # every image matches the wrong caption best
    r = recall_at_k(eye, shifted, ks=(1, 4))
    assert r["i2t@1"] == 0.0 and r["i2t@4"] == 1.0


class _Lookup:
    """An embedder whose image embedding is the one-hot of the pixel value and text of the class index."""

    preprocess = PreprocessSpec(image_size=2, mean=(0, 0, 0), std=(1, 1, 1))

    def embed_pixels(self, pixels):
        k = np.rint(pixels[:, 0, 0, 0] * 255).astype(int)
        return np.eye(3, dtype=np.float32)[k]

    def embed_texts(self, texts):
        names = ["zero", "one", "two"]
        return np.stack([np.eye(3, dtype=np.float32)[next(i for i, n in enumerate(names) if n in t)] for t in texts])


class _Tiny(ImageTextDataset):
    classes = ["zero", "one", "two"]
    templates = ("a {}", "the {}")
    has_captions = True

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def image(self, i):
        return np.full((2, 2), self.labels[i], dtype=np.uint8)

    def label(self, i):
        return self.labels[i]

    def caption(self, i, variant=0):
        return f"a {self.classes[self.labels[i]]}"


def test_zero_shot_and_recall_on_a_perfect_embedder():
    report = evaluate(_Lookup(), _Tiny([0, 1, 2, 1]), batch_size=3)
    assert report.top1 == 1.0 and report.top5 == 1.0 and report.n == 4
    assert report.recall["i2t@1"] == 1.0
    assert "zero-shot top-1" in format_report(report)


def test_wrong_prompts_give_wrong_predictions():
    report = evaluate(_Lookup(), _Tiny([0, 1, 2]), classes=["one", "two", "zero"])
    assert report.top1 == 0.0


def test_prompt_ensemble_is_normalised_mean():
    emb = class_embeddings(_Lookup(), ["one", "two"], ["a {}", "the {}"])
    assert np.allclose(emb, np.eye(3, dtype=np.float32)[[1, 2]])
    with pytest.raises(ConfigError, match="at least one class name"):
        class_embeddings(_Lookup(), [], ["a {}"])
