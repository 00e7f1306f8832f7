"""Fault injection, inputs: images, texts and labels as a device meets them, through the runtime and the CLI.

Already covered elsewhere (not repeated here): zero-byte, truncated, mislabelled, 16-bit, CMYK, RGBA,
palette with transparency, grayscale, 1x1 and decompression-bomb files, EXIF rotation in ``open_image``
(test_images); the 10,000-character and emoji texts in the CLIP tokenizer (test_hf_clip); an empty or
non-string label list and duplicate labels (test_runtime).
"""

import numpy as np
import pytest
from PIL import Image

import vledge
import vledge.images as images_module
from bundles import build_bundle, sample_images
from faults import assert_clean_failure, run_vledge
from vledge.errors import ConfigError, ImageDecodeError
from vledge.images import PreprocessSpec, preprocess, resize_and_crop


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vledge.load(build_bundle(tmp_path_factory.mktemp("inputs") / "bundle"), threads=1)


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    bundle = build_bundle(tmp_path_factory.mktemp("inputs-static") / "bundle", static_batch=2, static_seq=16)
    return vledge.load(bundle, threads=1)


# --- images


def test_extreme_aspect_ratio_is_resized_only_where_the_crop_keeps_it(tmp_path, monkeypatch):
    # 1 x 40,000 pixels is a PNG of a few hundred bytes; resized whole to a 224 shortest edge it took 19 GB
    # and 40 s.
    path = tmp_path / "strip.png"
    Image.fromarray(np.full((1, 40_000, 3), 90, np.uint8)).save(path)
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or resize(self, size, *a, **k))
    pixels = preprocess(path, PreprocessSpec(image_size=224))
    assert pixels.shape == (1, 3, 224, 224) and np.isfinite(pixels).all()
    assert sizes == [(224, 224)]


def test_band_resize_matches_the_whole_resize(monkeypatch):
    # Same scale, same source pixels: equal on smooth images (on pixel noise Pillow's two passes round
    # differently: up to 25 levels, 0.5 on average, seen on a 3000 x 7 noise image).
    rows, cols = np.mgrid[0:3000, 0:7]
    smooth = np.stack([(rows * 0.08) % 256, (cols * 30) % 256, (rows * 0.05 + cols) % 256], -1).astype(np.uint8)
    cases = [(smooth, PreprocessSpec(image_size=32)), (smooth.transpose(1, 0, 2), PreprocessSpec(image_size=24, resize_to=30))]
    for image, spec in cases:
        whole = resize_and_crop(Image.fromarray(image), spec)
        monkeypatch.setattr(images_module, "RESIZE_PIXEL_BUDGET", 100)
        band = resize_and_crop(Image.fromarray(image), spec)
        monkeypatch.undo()
        assert band.shape == whole.shape
        assert np.abs(band.astype(int) - whole).max() <= 1


def _rotated_jpeg(path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_rotation_is_the_same_in_training_and_at_runtime(model, tmp_path):
    from PIL import ImageOps

    from vledge.data.imagefolder import ImageFolderDataset

    (tmp_path / "tree" / "bag").mkdir(parents=True)
    path = _rotated_jpeg(tmp_path / "tree" / "bag" / "phone.jpg")
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert upright.shape == (40, 20, 3)
    spec = model.manifest.preprocess
    training = ImageFolderDataset(tmp_path / "tree").batch([0], spec).pixels
    np.testing.assert_array_equal(training, preprocess(upright, spec))
    np.testing.assert_array_equal(training, preprocess(path, spec))
    np.testing.assert_array_equal(model.encode_image(path), model.encode_image(upright))
    assert not np.allclose(model.encode_image(path), model.encode_image(np.asarray(Image.open(path))), atol=1e-3)


@pytest.mark.parametrize("mode, make, expected", [
    ("P", lambda: _palette(), [[255, 0, 0], [0, 0, 255]]),
    ("LA", lambda: Image.fromarray(np.array([[[80, 255], [80, 0]]], np.uint8), "LA"), [[80, 80, 80], [255, 255, 255]]),
    ("1", lambda: Image.fromarray(np.array([[255, 0]], np.uint8)).convert("1"), [[255, 255, 255], [0, 0, 0]]),
])
def test_more_pixel_modes_read_from_png(tmp_path, mode, make, expected):
    path = tmp_path / f"{mode}.png"
    make().save(path)
    assert Image.open(path).mode == mode
    assert np.asarray(images_module.open_image(path))[0].tolist() == expected


def _palette():
    img = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return img


def test_a_bad_image_in_a_batch_is_named(model, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(sample_images(1)[0]).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not pixels")
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*notes.png: not an image format Pillow can read"):
        model.classify([good, bad, good], ["bag", "coat"])
    with pytest.raises(ImageDecodeError, match=r"cannot decode image <array>: expected HW or HWC pixels, got shape \(2, 2, 2\)"):
        model.encode_image([np.zeros((2, 2, 2), np.uint8)])


def test_cli_broken_images_are_clean_messages(model, tmp_path):
    from test_images import _png_header_only

    bomb, empty = tmp_path / "bomb.png", tmp_path / "empty.jpg"
    _png_header_only(bomb, 20_000, 20_000)
    empty.write_bytes(b"")
    bundle = model.info()["path"]
    assert_clean_failure(run_vledge("run", bundle, bomb, "--labels", "bag,coat"), "run", "bomb.png: image too large")
    assert_clean_failure(run_vledge("run", bundle, empty, "--labels", "bag,coat"), "run", "empty.jpg: file is empty (0 bytes)")


# --- texts


TEXTS = ["", "   ", "x" * 10_000, "Ünïcödé 日本語 🙂🚀", "tab\tnew\nline\x00nul\x7f", "a photo of a bag."]


@pytest.mark.parametrize("which", ["model", "static_model"])
def test_unusual_texts_embed_and_long_ones_are_truncated(which, request):
    edge = request.getfixturevalue(which)
    embeddings = edge.encode_text(TEXTS)
    assert embeddings.shape == (len(TEXTS), edge.embed_dim) and np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    ids, _ = edge.tokenizer(["x " * 5_000, "x " * 5_000 + "but a different ending"])
    assert ids.shape[1] == edge.tokenizer.spec.max_length == 16
    long_a, long_b = edge.encode_text(["word " * 2_000, "word " * 2_000 + "then something else"])
    np.testing.assert_allclose(long_a, long_b, atol=1e-6)  # only the first 16 tokens count
    np.testing.assert_allclose(edge.encode_text(TEXTS[3]), embeddings[3:4], atol=1e-5)  # batched or alone


def test_unusual_labels_classify(model):
    labels = ["Ünïcödé 🙂", "{0} braces {}", "", "x" * 10_000]
    ranked = model.classify(sample_images(1), labels, top_k=4)[0]
    assert sorted(name for name, _ in ranked) == sorted(labels)
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("templates, message", [
    (["a photo"], r"prompt template 'a photo' has no \{\} for the label"),
    (["a photo of a {name}"], r"prompt template 'a photo of a \{name\}' has a brace that is not a bare \{\}: a template "
                              r"takes the label at \{\} and nothing else; double any other brace"),
    (["a {} {}"], r"prompt template 'a \{\} \{\}' has 2 \{\} where one label goes"),
    (["a {"], r"prompt template 'a \{' has a brace that is not a bare \{\}"),
    (["{:>400000000}"], r"prompt template '\{:>400000000\}' has a brace that is not a bare \{\}"),
    (["{0}", "{!r}"], r"prompt template '\{0\}' has a brace that is not a bare \{\}"),
    ([b"a {}"], r"prompt templates must be strings, got bytes"),
    (["a \ud800 {}"], r"a prompt template 'a \\ud800 \{\}' is not valid Unicode: a lone surrogate at character 2"),
    ("a photo of a {}", r"prompt templates must be a list of strings, e.g. \['a photo of a \{\}.'\]"),
])
def test_bad_prompt_templates_are_config_errors(model, templates, message):
    with pytest.raises(ConfigError, match=message):
        model.classify(sample_images(1), ["bag", "coat"], templates=templates)


def test_bad_prompt_templates_in_evaluation():
    from vledge.evaluate import class_embeddings

    with pytest.raises(ConfigError, match=r"prompt template 'photo' has no \{\} for the label"):
        class_embeddings(None, ["bag"], ["photo"])
