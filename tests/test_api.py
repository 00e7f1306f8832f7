"""The Python API camera code calls: one image in, one Prediction out; channel order; token ids; info."""

import json

import numpy as np
import pytest

import vledge
from bundles import LABEL_NAMES, LABEL_TEMPLATES, build_bundle, sample_images
from vledge.errors import ConfigError

LABELS = ["bag", "coat", "sneaker", "trouser", "dress", "sandal"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vledge.load(build_bundle(tmp_path_factory.mktemp("api") / "bundle"), device="cpu", threads=1)


@pytest.fixture(scope="module")
def static_text_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api-static") / "bundle"
    return vledge.load(build_bundle(folder, static_seq=16), device="cpu", threads=1)


def colour_frames(n: int, size: int = 28, seed: int = 3) -> list[np.ndarray]:
    """HWC uint8 frames whose channels differ, so that swapping them changes the embedding."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_one_image_gives_one_prediction(model):
    image = sample_images(1)[0]
    prediction = model.classify(image, LABELS, top_k=3)
    assert isinstance(prediction, vledge.Prediction)
    assert (prediction.label, prediction.score) == prediction.top[0] and len(prediction.top) == 3
    assert [p for _, p in prediction.top] == sorted((p for _, p in prediction.top), reverse=True)
    everything = model.classify(image, LABELS, top_k=len(LABELS))
    assert sum(p for _, p in everything.top) == pytest.approx(1.0, abs=1e-5)
    assert everything.top[:3] == prediction.top


def test_a_list_or_a_batch_array_gives_a_list(model):
    images = sample_images(3, seed=1)
    listed = model.classify(images, LABELS, top_k=2)
    assert isinstance(listed, list) and len(listed) == 3
    assert listed == [model.classify(im, LABELS, top_k=2) for im in images]
    assert model.classify(np.stack(images)[..., None], LABELS, top_k=2) == listed  # NHWC
    assert model.classify(iter(images), LABELS, top_k=2) == listed
    assert model.classify(images[:1], LABELS, top_k=2) == listed[:1]  # a list of one is still a list


def test_prediction_is_frozen_and_plain_to_serialise(model):
    prediction = model.classify(sample_images(1)[0], LABELS, top_k=2)
    with pytest.raises(AttributeError):
        prediction.label = "other"
    plain = json.loads(json.dumps(prediction.to_dict()))
    assert plain == {"label": prediction.label, "score": prediction.score,
                     "top": [{"label": n, "score": s} for n, s in prediction.top]}


@pytest.mark.parametrize("size", [28, 45])  # at the tower's size (no resize) and through the resize
def test_bgr_frames_match_the_flipped_rgb_result(model, size):
    frames = colour_frames(2, size)
    bgr = [f[..., ::-1].copy() for f in frames]
    rgb_embeddings = model.encode_image(frames)
    np.testing.assert_allclose(model.encode_image(bgr, channels="bgr"), rgb_embeddings, atol=1e-6)
    np.testing.assert_allclose(model.encode_image(np.stack(bgr), channels="bgr"), rgb_embeddings, atol=1e-6)
    assert model.classify(bgr[0], LABELS, channels="bgr") == model.classify(frames[0], LABELS)
    assert model.classify(bgr[0], LABELS) != model.classify(frames[0], LABELS)  # the order matters
    bgra = np.concatenate([bgr[0], np.full((size, size, 1), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(model.encode_image(bgra, channels="bgr"), rgb_embeddings[:1], atol=1e-6)


def test_channels_leave_grayscale_and_encoded_images_alone(model):
    gray = sample_images(1)[0]
    np.testing.assert_array_equal(model.encode_image(gray, channels="bgr"), model.encode_image(gray))
    with pytest.raises(ConfigError, match=r"channels must be 'rgb' or 'bgr' \(OpenCV frames\), got 'BGR '"):
        model.classify(gray, LABELS, channels="BGR ")


def test_encode_text_takes_token_ids(model):
    texts = ["a photo of a bag.", "a sneaker", "a very long description of a coat with many words"]
    ids, mask = model.tokenizer(texts)
    expected = model.encode_text(texts)
    np.testing.assert_allclose(model.encode_text(input_ids=ids, attention_mask=mask), expected, atol=1e-6)
    np.testing.assert_allclose(model.encode_text(input_ids=ids.tolist(), attention_mask=mask.astype(bool)),
                               expected, atol=1e-6)
    one_ids, _ = model.tokenizer(texts[1])
    np.testing.assert_allclose(model.encode_text(input_ids=one_ids[0]), expected[1:2], atol=1e-6)  # no padding


def test_token_ids_reach_a_static_length_tower_padded(static_text_model):
    model = static_text_model
    texts = ["a bag", "a photo of a sneaker."]
    ids, mask = model.tokenizer(texts)  # as long as the longest text, shorter than the tower's 16
    assert ids.shape[1] < 16
    np.testing.assert_allclose(model.encode_text(input_ids=ids, attention_mask=mask), model.encode_text(texts),
                               atol=1e-6)


def test_token_id_errors_say_what_to_pass(model):
    ids, mask = model.tokenizer(["a bag"])
    vocab = model.tokenizer.backend.get_vocab_size(with_added_tokens=True)
    cases = [
        (dict(input_ids=ids, attention_mask=mask[:, :-1]), r"attention_mask has shape \(1, \d+\), input_ids"),
        (dict(input_ids=ids.astype(np.float32)), "input_ids must be a non-empty integer array of shape"),
        (dict(input_ids=[[1, 2], [3]]), r"input_ids must be a non-empty integer array .* got list"),
        (dict(input_ids=ids + vocab), f"token ids of this bundle's tokenizer, 0 to {vocab - 1}"),
        (dict(input_ids=np.ones((1, 500), np.int64)), "at most 16: truncate them"),
        (dict(input_ids=ids, attention_mask=mask * 2), r"attention_mask must hold only 0 \(padding\) and 1"),
        (dict(attention_mask=mask), "attention_mask was given without input_ids"),
        (dict(texts="a bag", input_ids=ids), "pass texts or input_ids to encode_text, not both"),
        (dict(), "texts must be a string or a list of strings, got NoneType; .* or pass input_ids="),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            model.encode_text(**kwargs)


def test_info_lists_the_label_names(model):
    labels = model.info()["label_set"]
    assert labels == {"names": LABEL_NAMES, "count": len(LABEL_NAMES), "templates": LABEL_TEMPLATES,
                      "embedded": True}


def test_edge_model_is_exported():
    from vledge.runtimes.model import EdgeModel

    assert vledge.EdgeModel is EdgeModel and "EdgeModel" in dir(vledge)
    with pytest.raises(AttributeError, match="module 'vledge' has no attribute 'Edgemodel'"):
        vledge.Edgemodel
