import numpy as np
import pytest

from vledge.data.base import ImageTextDataset
from vledge.errors import ConfigError
from vledge.evaluate import EvalReport, class_embeddings, evaluate, format_report, recall_at_k, zero_shot_metrics
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
    report = evaluate(_Lookup(), _Tiny([0, 1, 2]), batch_size=2)
    assert report.top1 == 1.0 and report.n == 3 and report.mean_per_class_recall == 1.0
    assert report.recall["i2t@1"] == 1.0 and report.recall["t2i@1"] == 1.0
    assert "zero-shot top-1" in format_report(report)


def test_top5_is_not_applicable_under_five_classes():
    report = evaluate(_Lookup(), _Tiny([0, 1, 2, 1]))
    assert report.top5 is None
    reason = "only 3 classes: top-5 needs at least 5 (every image would count as a hit)"
    assert report.not_applicable == {"acc5": reason}
    assert report.clip_benchmark_metrics()["acc5"] is None
    assert "zero-shot top-5        n/a (3 classes)" in format_report(report)


def test_wrong_prompts_give_wrong_predictions():
    report = evaluate(_Lookup(), _Tiny([0, 1, 2]), classes=["one", "two", "zero"])
    assert report.top1 == 0.0


def test_prompt_ensemble_is_normalised_mean():
    emb = class_embeddings(_Lookup(), ["one", "two"], ["a {}", "the {}"])
    assert np.allclose(emb, np.eye(3, dtype=np.float32)[[1, 2]])
    with pytest.raises(ConfigError, match="at least one class name"):
        class_embeddings(_Lookup(), [], ["a {}"])


def test_a_repeated_caption_ties_and_the_earlier_copy_ranks_first():
    # Images 0 and 1 both look like caption 0, whose text is repeated as caption 1; captions 2 and 3 are unique.
    images = np.eye(4, dtype=np.float32)
    images[1] = [0.995, 0.0998, 0, 0]
    texts = np.eye(4, dtype=np.float32)
    texts[1] = texts[0]
    r = recall_at_k(images, texts, ks=(1, 2), caption_ids=np.array([0, 0, 1, 2]))
    # image -> text: image 0's caption ties with the later copy and ranks first; image 1's ties with the
    # earlier copy and ranks second.
    assert r["i2t@1"] == 0.75 and r["i2t@2"] == 1.0
    # text -> image: the repeated caption ranks image 0 first, so its copy paired with image 1 misses at 1.
    assert r["t2i@1"] == 0.75 and r["t2i@2"] == 1.0
    assert recall_at_k(images, texts, ks=(1, 2)) == r  # exactly equal rows tie without ids too


def test_distinct_candidates_with_equal_scores_rank_in_data_order():
    images = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)  # images 0 and 2 are the same picture
    texts = np.array([[0.6, 0.8], [0, 1], [0.6, -0.8]], dtype=np.float32)  # three different captions
    r = recall_at_k(images, texts, ks=(1, 2))
    # image -> text: images 0 and 2 score 0.6 with texts 0 and 2 alike; text 0 comes first, so image 0's
    # pair ranks first and image 2's second.
    assert r["i2t@1"] == pytest.approx(2 / 3) and r["i2t@2"] == 1.0
    # text -> image: text 0 prefers image 1 (0.8 > 0.6); text 2 ties images 0 and 2, and image 0 comes first.
    assert r["t2i@1"] == pytest.approx(1 / 3) and r["t2i@2"] == 1.0


def test_retrieval_on_repeated_captions_ranks_copies_in_data_order():
    report = evaluate(_Lookup(), _Tiny([0, 1, 2, 1, 0, 0]), ks=(1, 2, 3), batch_size=4)
    # Captions "a zero" at 0, 4, 5, "a one" at 1, 3, "a two" at 2; every copy of an image's caption scores 1 and
    # every other caption 0, so an image's pair ranks behind the earlier copies of its caption: ranks
    # 0, 0, 0, 1, 1, 2 in either direction (the images repeat as the captions do).
    assert report.recall["i2t@1"] == 0.5 and report.recall["i2t@2"] == pytest.approx(5 / 6)
    assert report.recall["i2t@3"] == 1.0
    assert report.recall["t2i@1"] == 0.5 and report.recall["t2i@2"] == pytest.approx(5 / 6)
    assert report.recall["t2i@3"] == 1.0
    metrics = report.clip_benchmark_metrics()
    assert metrics["text_retrieval_recall@1"] == report.recall["i2t@1"]
    assert metrics["image_retrieval_recall@3"] == report.recall["t2i@3"]
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall"} | {
        f"{side}_retrieval_recall@{k}" for side in ("image", "text") for k in (1, 2, 3)}


def test_recall_is_the_same_in_any_chunk_size():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((7, 3)).astype(np.float32)
    ids = np.array([0, 1, 0, 2, 1, 0, 3])
    texts = rng.standard_normal((4, 3)).astype(np.float32)[ids]
    whole = recall_at_k(images, texts, ks=(1, 2, 3), caption_ids=ids)
    assert all(recall_at_k(images, texts, ks=(1, 2, 3), chunk=c, caption_ids=ids) == whole for c in (1, 2, 3))


def test_per_class_recall_and_its_mean():
    scores = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    truth = np.array([0, 0, 1, 1, 2])
    report = EvalReport(n=5)
    zero_shot_metrics(report, scores, truth, ["a", "b", "c"])
    assert report.per_class_recall == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert report.mean_per_class_recall == pytest.approx(0.5) and report.top1 == pytest.approx(0.6)
    tied = np.zeros((2, 5), dtype=np.float32)  # every class ties: the lowest index wins, as an argmax's
    zero_shot_metrics(report := EvalReport(n=2), tied, np.array([0, 4]), list("abcde"))
    assert report.top1 == 0.5 and report.top5 == 1.0 and report.per_class_recall == {"a": 1.0, "e": 0.0}


def test_recall_k_values_are_checked():
    with pytest.raises(ConfigError, match=r"recall k values must be whole numbers of at least 1, e.g. 1,5,10; got \[0"):
        recall_at_k(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), ks=(0,))


def test_class_names_must_match_the_data_sets_classes():
    with pytest.raises(ConfigError, match=r"2 class names given for the 3 classes of"):
        evaluate(_Lookup(), _Tiny([0, 1]), classes=["zero", "one"])
