"""vledge.images on real photos: parity with Hugging Face's CLIPImageProcessor, and every decoding case."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vledge import opencv_frames
from vledge.errors import ImageDecodeError
from vledge.images import (
    PreprocessSpec, fast_crop, normalize, open_image, preprocess, preprocess_uint8_batch, resize_and_crop,
)

datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos (china, flower; 427x640 RGB) plus a portrait crop with odd sides."""
    china, flower = datasets.load_sample_images().images
    return {"china": china, "flower": flower, "portrait": flower[13:314, 101:298]}


# (shortest edge, crop): the CLIP default, a small student size, odd sizes, and a crop larger than the resize
# (zero padding with an odd number of pixels).
@pytest.mark.parametrize("resize_to,crop", [(224, 224), (64, 56), (37, 31), (55, 64)])
def test_preprocess_matches_clip_image_processor(photos, resize_to, crop):
    transformers = pytest.importorskip("transformers")
    processor = transformers.CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": resize_to}, resample=Image.Resampling.BICUBIC,
        do_center_crop=True, crop_size={"height": crop, "width": crop},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
    )
    spec = PreprocessSpec(image_size=crop, resize_to=resize_to)
    images = list(photos.values())
    expected = processor(images=[Image.fromarray(im) for im in images], return_tensors="np")["pixel_values"]
    ours = preprocess(images, spec)
    assert ours.shape == expected.shape == (len(images), 3, crop, crop)
    assert ours.dtype == np.float32
    assert np.abs(ours - expected).max() < 1e-5


def test_preprocess_accepts_paths_pil_and_arrays_alike(photos, tmp_path):
    path = tmp_path / "china.png"
    Image.fromarray(photos["china"]).save(path)
    spec = PreprocessSpec(image_size=48, resize_to=52)
    from_array = preprocess(photos["china"], spec)
    np.testing.assert_array_equal(preprocess(str(path), spec), from_array)
    np.testing.assert_array_equal(preprocess(Image.fromarray(photos["china"]), spec), from_array)
    assert preprocess([path, photos["flower"]], spec).shape == (2, 3, 48, 48)


def _through_pillow(frames, spec):
    """The slow path written out: Pillow decode, resize and crop, then ``(x / 255 - mean) / std`` per pixel."""
    crops = np.stack([resize_and_crop(open_image(f), spec) for f in frames]).astype(np.float32) * np.float32(1 / 255)
    x = (crops - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(0, 3, 1, 2)


def test_frames_at_size_skip_pillow_with_identical_values(photos):
    spec = PreprocessSpec(image_size=32)
    tiles = np.stack([photos["china"][:32, :32], photos["flower"][100:132, 200:232]])
    for frames in (tiles, tiles[..., 0], tiles[..., :1]):  # RGB, HW grayscale, HW1 grayscale
        expected = _through_pillow(frames, spec)
        np.testing.assert_array_equal(preprocess(list(frames), spec), expected)
        np.testing.assert_array_equal(preprocess(frames[0], spec), expected[:1])
        np.testing.assert_array_equal(preprocess_uint8_batch(frames, spec), expected)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every level once
    np.testing.assert_array_equal(preprocess(levels, PreprocessSpec(16)), _through_pillow([levels], PreprocessSpec(16)))


def test_normalising_strided_views_gives_the_formula_s_values(photos, resizer):
    # Strided rows and BGR reversed, above and below the size where OpenCV's lookup takes over from numpy's.
    views = photos["flower"][100:292:2, 200:392:2], photos["china"][:96, :96, ::-1], photos["china"][:32, :32, ::-1]
    for view in views:
        assert not view.flags.c_contiguous
        spec = PreprocessSpec(image_size=len(view))
        np.testing.assert_array_equal(normalize(view[None], spec), _through_pillow([np.ascontiguousarray(view)], spec))


def test_frames_not_at_size_are_resized(photos):
    tiles = np.stack([photos["china"][:40, :40], photos["flower"][100:140, 200:240]])
    for spec in (PreprocessSpec(image_size=32), PreprocessSpec(image_size=40, resize_to=44)):
        np.testing.assert_array_equal(preprocess_uint8_batch(tiles, spec), _through_pillow(tiles, spec))
        np.testing.assert_array_equal(preprocess_uint8_batch(tiles[..., 1], spec), _through_pillow(tiles[..., 1], spec))


# --- full-HD frames: the fast path


def _full_hd(image, size=(1920, 1080)):
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def _exact(frame, spec):
    return resize_and_crop(open_image(frame), spec, exact=True)


@pytest.fixture(params=["pillow", "opencv"])
def resizer(request, monkeypatch):
    """Each fast path: OpenCV's where cv2 is installed, Pillow's where it is not."""
    if request.param == "opencv":
        pytest.importorskip("cv2")
    else:
        monkeypatch.setattr(opencv_frames, "available", lambda: False)
        monkeypatch.setattr(opencv_frames, "imported", lambda: False)
    return request.param


# The mean, 99.9th percentile and largest difference to the exact path, in levels: OpenCV's 4x4 box at 1080p
# (3x3 in Pillow's) and its bicubic without a widened kernel are softer.
WITHIN = {"pillow": (1.0, 10, 20), "opencv": (3.0, 32, 50)}


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (1280, 720)])
@pytest.mark.parametrize("spec", [PreprocessSpec(224), PreprocessSpec(image_size=200, resize_to=224)])
def test_large_frames_take_the_fast_path_within_a_few_levels_of_the_exact_one(photos, size, spec, resizer):
    mean, p999, most = WITHIN[resizer]
    for name in ("china", "flower"):
        frame = _full_hd(photos[name], size)
        fast, exact = fast_crop(frame, spec), _exact(frame, spec)
        assert fast.shape == exact.shape == (spec.image_size, spec.image_size, 3) and fast.dtype == np.uint8
        diff = np.abs(fast.astype(int) - exact.astype(int))
        assert diff.mean() < mean and np.percentile(diff, 99.9) <= p999 and diff.max() <= most, (name, diff.mean(), diff.max())
        np.testing.assert_array_equal(preprocess(frame, spec), normalize(fast[None], spec))


def test_frame_sides_of_partial_blocks_stay_close_above_the_last_row(photos, resizer):
    spec = PreprocessSpec(224)
    frame = _full_hd(photos["china"], (1920, 1079))  # 1079 rows: 269 whole 4 x 4 blocks and three rows over
    fast, exact = fast_crop(frame, spec).astype(int), _exact(frame, spec).astype(int)
    assert fast.shape == (224, 224, 3)
    assert np.abs(fast - exact)[:-1].mean() < WITHIN[resizer][0]


def test_pil_images_take_pillows_fast_path(photos):
    frame = _full_hd(photos["china"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(opencv_frames, "available", lambda: False)
        pillow = fast_crop(frame, PreprocessSpec(224))
    np.testing.assert_array_equal(preprocess(Image.fromarray(frame), PreprocessSpec(224)), normalize(pillow[None], PreprocessSpec(224)))


def test_fast_path_reads_views_bgr_views_and_contiguous_frames_alike(photos, resizer):
    wide = _full_hd(photos["flower"], (2000, 1080))
    view = wide[:, 40:1960]  # not contiguous: rows 2000 pixels apart
    assert not view.flags.c_contiguous
    spec = PreprocessSpec(224)
    np.testing.assert_array_equal(fast_crop(view, spec), fast_crop(view.copy(), spec))
    reversed_view = np.ascontiguousarray(view[..., ::-1])[..., ::-1]  # what channels="bgr" hands the fast path
    np.testing.assert_array_equal(fast_crop(reversed_view, spec), fast_crop(view, spec))


@pytest.mark.parametrize("spec", [PreprocessSpec(224), PreprocessSpec(28)])
def test_fast_path_keeps_the_exact_crop_geometry(spec, resizer):
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, 959:961] = 255  # a line through the centre, and one at the crop's left edge
    left = 1920 // 2 - 540
    frame[:, left : left + 2] = 255
    fast, exact = fast_crop(frame, spec).astype(int), _exact(frame, spec).astype(int)
    middle = spec.image_size // 2

    def centre_of_line(row):  # the centre line's position, in output pixels (away from the edge line)
        row = row[5:]
        return 5 + (np.arange(len(row)) * row).sum() / row.sum()

    assert abs(centre_of_line(fast[middle, :, 0]) - centre_of_line(exact[middle, :, 0])) < 0.1
    assert exact[middle, 0, 0] > 0 and fast[middle, 0, 0] > exact[middle, 0, 0] / 2  # the edge line, half kept
    assert np.abs(fast - exact).mean() < 1.0


def test_small_grayscale_and_alpha_frames_keep_the_exact_path(photos):
    spec = PreprocessSpec(224)
    assert fast_crop(photos["china"], spec) is None  # 427 x 640: under three times the tower's size
    big = _full_hd(photos["china"])
    assert fast_crop(big[..., 0], spec) is None and fast_crop(np.dstack([big, big[..., :1]]), spec) is None
    assert fast_crop(big, PreprocessSpec(image_size=224, resize_to=200)) is None  # the crop would pad
    np.testing.assert_array_equal(preprocess(photos["china"], spec), normalize(_exact(photos["china"], spec)[None], spec))


# --- decoding: files that are broken, unusual or dangerous


def _expect_decode_error(path, *fragments):
    with pytest.raises(ImageDecodeError) as info:
        open_image(path)
    message = str(info.value)
    assert str(path) in message and info.value.path == str(path)
    for fragment in fragments:
        assert fragment in message
    return message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _expect_decode_error(path, "file is empty (0 bytes)")


def test_truncated_jpeg(photos, tmp_path):
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    Image.fromarray(photos["china"]).save(whole, quality=90)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _expect_decode_error(cut, "truncated")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are notes, not pixels\n")
    _expect_decode_error(path, "not an image format Pillow can read")


def test_missing_file(tmp_path):
    _expect_decode_error(tmp_path / "nowhere.png", "file not found")


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height pixels: Pillow's bomb check reads only the header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_refused(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 20_000, 20_000)
    _expect_decode_error(path, "too large", "400000000 pixels")


def test_16bit_grayscale_png_scaled_to_8bit(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "depth.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = np.asarray(open_image(path))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.round(ramp / 65535 * 255).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_jpeg_becomes_rgb(photos, tmp_path):
    path = tmp_path / "print.jpg"
    Image.fromarray(photos["flower"]).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = np.asarray(open_image(path))
    assert out.shape == photos["flower"].shape
    assert np.abs(out.astype(int) - photos["flower"]).mean() < 3  # JPEG loss only, no colour inversion


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :, 3] = [[0], [255], [128]]  # row 0 transparent, row 1 opaque, row 2 half
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    for source in (path, rgba):
        out = np.asarray(open_image(source))
        assert out[0].tolist() == [[255, 255, 255]] * 4
        assert out[1].tolist() == [[200, 0, 0]] * 4
        np.testing.assert_allclose(out[2, 0], [227, 127, 127], atol=1)


def test_palette_with_transparency(tmp_path):
    index = np.zeros((4, 4), np.uint8)
    index[2:] = 1
    img = Image.fromarray(index, "P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    path = tmp_path / "palette.png"
    img.save(path, transparency=1)  # palette entry 1 (blue) is fully transparent
    out = np.asarray(open_image(path))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[3, 3].tolist() == [255, 255, 255]


def test_grayscale_and_one_pixel_images(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((5, 7), 77, np.uint8)).save(gray)
    out = open_image(gray)
    assert out.mode == "RGB" and out.size == (7, 5)
    assert np.all(np.asarray(out) == 77)
    dot = tmp_path / "dot.png"
    Image.fromarray(np.array([[[10, 20, 30]]], np.uint8)).save(dot)
    spec = PreprocessSpec(image_size=8)
    pixels = preprocess(dot, spec)
    assert pixels.shape == (1, 3, 8, 8)
    expected = (np.array([10, 20, 30]) / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(pixels[0, :, 4, 4], expected, atol=1e-5)  # upscaling a flat image stays flat


def test_exif_orientation_honoured(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = np.asarray(open_image(path))
    assert out.shape == (40, 20, 3)  # portrait now
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # the left half is now the top half
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50


def test_uint8_arrays_hwc_hw_and_single_channel(photos):
    rgb = photos["china"][:10, :12]
    np.testing.assert_array_equal(np.asarray(open_image(rgb)), rgb)
    gray = rgb[..., 1]
    for source in (gray, gray[..., None]):
        out = np.asarray(open_image(source))
        assert out.shape == (10, 12, 3)
        np.testing.assert_array_equal(out[..., 2], gray)


def test_float_array_refused_with_a_hint():
    with pytest.raises(ImageDecodeError, match=r"expected uint8 pixels, got float32; convert first"):
        open_image(np.zeros((4, 4, 3), np.float32))


def test_array_of_wrong_shape_refused():
    with pytest.raises(ImageDecodeError, match=r"expected HW or HWC pixels, got shape \(4, 4, 2\)"):
        open_image(np.zeros((4, 4, 2), np.uint8))
