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
    ranked = model.classify(sample_images(1), labels, top_k=4)[0].top
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


# --- every kind of input a caller can pass: answered, or a named error


def _png_bytes(pixels):
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_encoded_image_bytes_and_streams_are_images(model, tmp_path):
    import io

    pixels = sample_images(1, seed=3)[0]
    path = tmp_path / "frame.png"
    path.write_bytes(_png_bytes(pixels))
    expected = model.encode_image(path)
    for given in (path.read_bytes(), bytearray(path.read_bytes()), io.BytesIO(path.read_bytes()), open(path, "rb")):
        np.testing.assert_array_equal(model.encode_image(given), expected)
    np.testing.assert_array_equal(model.encode_image([path.read_bytes(), pixels])[0], expected[0])
    with pytest.raises(ImageDecodeError, match=r"cannot decode image <bytes>: not an image format Pillow can read"):
        model.encode_image(b"not an image")
    with pytest.raises(ImageDecodeError, match=r"cannot decode image <stream>: not an image format"):
        model.encode_image(io.BytesIO(b""))


@pytest.mark.parametrize("images, error, message", [
    (None, ConfigError, r"images cannot be None; pass an image"),
    ([None], ConfigError, r"an image cannot be None"),
    ([[sample_images(1)[0]]], ConfigError, r"an image cannot be a list \(nested inside the list of images\)"),
    ([(sample_images(1)[0],)], ConfigError, r"an image cannot be a tuple"),
    ({"a": 1}, ConfigError, r"images cannot be a mapping"),
    (42, ConfigError, r"images must be an image \(path, PIL image, uint8 array, encoded bytes\) or a list of them, got int"),
    ([3.5], ConfigError, r"cannot read an image from a float"),
    ([], ConfigError, r"no images given"),
    (iter([]), ConfigError, r"no images given"),
    (np.zeros((0, 5), np.uint8), ImageDecodeError, r"<array>: has no pixels \(shape \(0, 5\)\)"),
    (np.zeros((5, 0, 3), np.uint8), ImageDecodeError, r"<array>: has no pixels"),
    (np.zeros((0, 28, 28, 3), np.uint8), ConfigError, r"no images given"),
    (Image.new("RGB", (0, 4)), ImageDecodeError, r"<image>: has no pixels \(size 0 x 4\)"),
    (np.zeros(5, np.uint8), ImageDecodeError, r"expected HW or HWC pixels, got shape \(5,\)"),
    ("/nonexistent/x.png", ImageDecodeError, r"/nonexistent/x.png: file not found"),
    ("bad\0path.png", ImageDecodeError, r"cannot open it"),
])
def test_image_inputs_of_every_kind(model, images, error, message):
    with pytest.raises(error, match=message):
        model.encode_image(images)


def test_a_folder_or_fifo_as_an_image_path_never_hangs(tmp_path):
    import os
    import subprocess
    import sys

    from faults import CHILD_ENV

    os.mkfifo(tmp_path / "camera.png")  # a writer that never comes: opening it blocking would wait forever
    code = ("import sys\nfrom vledge.images import open_image\nfrom vledge.errors import ImageDecodeError\n"
            "for p in sys.argv[1:]:\n    try:\n        open_image(p)\n    except ImageDecodeError as exc:\n        print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "camera.png"), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **CHILD_ENV})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("not a regular file (a folder, FIFO or device); pass image files only") == 2, done.stdout


def test_a_generator_of_images_and_of_labels(model):
    images = sample_images(5, seed=11)
    expected = model.classify(images, ["bag", "coat", "sneaker"], top_k=2)
    labels = (name for name in ["bag", "coat", "sneaker"])
    assert model.classify((im for im in images), labels, top_k=2) == expected
    assert model.classify(images, iter(["bag", "coat", "sneaker"]), top_k=2) == expected  # cached list, same answer
    np.testing.assert_array_equal(model.encode_image(im for im in images), model.encode_image(images))


@pytest.mark.parametrize("top_k, message", [
    (2.5, r"top_k must be a whole number, got float 2.5"), ("3", r"top_k must be a whole number, got str '3'"),
    (True, r"top_k must be a whole number, got bool True"), (None, r"top_k must be a whole number, got NoneType"),
    (0, r"top_k must be at least 1, got 0"), (-1, r"top_k must be at least 1, got -1"),
])
def test_top_k_must_be_a_whole_number(model, top_k, message):
    with pytest.raises(ConfigError, match=message):
        model.classify(sample_images(1), ["bag", "coat"], top_k=top_k)
    assert len(model.classify(sample_images(1), ["bag", "coat"], top_k=np.int64(1))[0].top) == 1


@pytest.mark.parametrize("labels, message", [
    ("bag", r"labels must be a list of strings"), (b"bag", r"labels must be a list of strings"),
    ({"bag": 1}, r"labels must be a list of strings"), (7, r"labels must be a list of strings, e.g. \['cat', 'dog'\]; got int"),
    (["bag", 3], r"labels must be a list of strings"), ([["bag"]], r"labels must be a list of strings"),
    (["bag", "\udc80x"], r"a label '\\udc80x' is not valid Unicode: a lone surrogate at character 0"),
])
def test_labels_of_the_wrong_kind(model, labels, message):
    with pytest.raises(ConfigError, match=message):
        model.classify(sample_images(1), labels)


@pytest.mark.parametrize("texts, message", [
    (None, r"texts must be a string or a list of strings, got NoneType"), (5, r"got int"),
    (b"a bag", r"texts must be strings, got bytes; decode them first"),
    ([1, "a"], r"text 0 must be a string, got int"), (["a", None], r"text 1 must be a string, got NoneType"),
    (["a", b"b"], r"text 1 must be a string, got bytes; decode bytes first"),
    (["a", ["b"]], r"text 1 must be a string, got list"),
    (["ok", "bad \ud83d end"], r"text 1 'bad \\ud83d end' is not valid Unicode: a lone surrogate at character 4"),
    ([], r"no texts given"),
])
def test_texts_of_the_wrong_kind(model, texts, message):
    with pytest.raises(ConfigError, match=message):
        model.encode_text(texts)


@pytest.mark.parametrize("batch_size", [0, -3, 1.5, "8"])
def test_batch_size_must_be_a_whole_number(model, batch_size):
    with pytest.raises(ConfigError, match=r"batch_size must be"):
        model.encode_image(sample_images(2), batch_size=batch_size)
    with pytest.raises(ConfigError, match=r"batch_size must be"):
        model.encode_text(["a", "b"], batch_size=batch_size)


@pytest.mark.parametrize("pixels", [np.zeros((2, 3, 32, 32), np.float32), np.zeros((3, 28, 28), np.float32),
                                    np.zeros((0, 3, 28, 28), np.float32), [[0.0]], np.zeros((1, 3, 28, 28), complex)])
def test_preprocessed_pixels_of_the_wrong_shape(model, pixels):
    with pytest.raises(ConfigError, match=r"expected a non-empty float32 batch of pixels of shape \(n, 3, 28, 28\)"):
        model.encode_pixels(pixels)


def test_a_ten_megabyte_text_is_cut_before_tokenizing(model):
    import time

    huge = "a photo of a bag " + "x" * 10_000_000
    start = time.perf_counter()
    got = model.encode_text(huge)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # 82 s when the whole string was tokenized
    np.testing.assert_allclose(got, model.encode_text("a photo of a bag " + "x" * 2_000), atol=1e-6)


def test_memory_is_flat_in_the_number_of_images(model):
    import tracemalloc

    frames = list(np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8))

    def peak(n):
        tracemalloc.start()
        model.encode_image(frames[:n], batch_size=32)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(64), peak(4096)
    # All chunks prepared first held 4096 x 3 x 28 x 28 float32 (38.5 MB); chunk by chunk it is one chunk
    # (0.3 MB) plus the embeddings (4096 x 16 float32: 0.26 MB, and their copies).
    assert large < small + 4_000_000, (small, large)


def test_a_text_only_bundle_classifies_with_a_clear_error(tmp_path):
    import json

    bundle = build_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "vledge.json").read_text())
    del manifest["towers"]["image"]
    (bundle / "vledge.json").write_text(json.dumps(manifest))
    model = vledge.load(bundle)
    assert model.encode_text("a bag").shape == (1, 16)
    for call in (lambda: model.classify(sample_images(1)), lambda: model.encode_image(sample_images(1)),
                 lambda: model.encode_pixels(np.zeros((1, 3, 28, 28), np.float32))):
        with pytest.raises(ConfigError, match=r"this bundle has no image tower \(it has: text\)"):
            call()


def test_a_teacher_config_nested_too_deeply(tmp_path):
    from vledge.errors import CheckpointError
    from vledge.models import load_teacher

    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"model config .*config.json is not valid JSON for vledge: nested too deeply"):
        load_teacher(tmp_path)
