"""Image decoding and preprocessing in numpy and Pillow (no torch).

Training, evaluation and every runtime call ``preprocess`` so the transform is one piece of code.
"""

from __future__ import annotations

import fcntl
import functools
import io
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vledge import opencv_frames
from vledge.errors import ConfigError, ImageDecodeError

# Encoded image data (PNG, JPEG, ... bytes, or a binary stream such as BytesIO) is one image too.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes, io.IOBase]
_BYTES = (bytes, bytearray, memoryview)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Pillow's guard raises past twice this; 50 MP is more than any camera frame we expect.
Image.MAX_IMAGE_PIXELS = 50_000_000
# Past this many pixels after the resize, only the band the crop keeps is resized: a 1 x 40,000 strip
# (a tiny file) would otherwise become a 224 x 8,960,000 image (19 GB, 40 s).
RESIZE_PIXEL_BUDGET = 16_000_000
# The fast path's box average: blocks of at most FAST_MAX_BLOCK x FAST_MAX_BLOCK pixels, leaving the bicubic
# resize at least FAST_REDUCING_GAP to do (Pillow's ``reducing_gap``). A 1920x1080 frame for a 224-px tower is
# averaged in 3x3 blocks; for a 28-px tower in 8x8 blocks, since the box's softer filter moved the top-1 of a
# 28-px model on 0.9% of 1080p frames with 25x25 blocks and 0.2% with 8x8 ones (benchmarks/camera_frames.py).
FAST_REDUCING_GAP = 1.5
FAST_MAX_BLOCK = 8
FAST_MIN_EDGE = 720  # camera frames (720p and up) take the fast path; photos under it resize exactly as CLIP does
# OpenCV's per-plane LUT costs ~10 µs in calls: numpy's lookup is faster on small images (timed with timeit on
# 2 cores, one RGB image, numpy against OpenCV: 64 px 25 against 33 µs, 96 px 53 against 30 µs).
LUT_MIN_PIXELS = 80 * 80


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the tower's input: resize the shortest edge, centre-crop, normalise.

    The same fields as a Hugging Face CLIP ``preprocessor_config.json`` carries.
    """

    image_size: int
    resize_to: int | None = None  # shortest edge before the crop; None: same as image_size
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self):
        if self.image_size < 1:
            raise ConfigError(f"image_size must be positive, got {self.image_size}")
        if self.interpolation not in _RESAMPLE:
            raise ConfigError(
                f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need three values each, std positive")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
        return background
    return img.convert("RGB")


def open_image(source: ImageInput) -> Image.Image:
    """Decode one image from a path, PIL image, HWC/HW uint8 array, encoded bytes or a binary stream into an
    RGB PIL image. Paths must name regular files: a FIFO or a device is refused, never read (a read could hang)."""
    if isinstance(source, Image.Image):
        if 0 in source.size:
            raise ImageDecodeError("<image>", f"has no pixels (size {source.size[0]} x {source.size[1]})")
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            raise ImageDecodeError(
                "<array>",
                f"expected uint8 pixels, got {arr.dtype}; convert first, "
                "e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]",
            )
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ImageDecodeError("<array>", f"expected HW or HWC pixels, got shape {arr.shape}")
        if arr.size == 0:
            raise ImageDecodeError("<array>", f"has no pixels (shape {arr.shape})")
        return _to_rgb(Image.fromarray(arr))
    if isinstance(source, _BYTES):
        return _decode(io.BytesIO(bytes(source)), "<bytes>")
    if hasattr(source, "read"):
        return _decode(source, "<stream>")
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source)
    if source is None or isinstance(source, (list, tuple)):
        what = "None" if source is None else f"a {type(source).__name__} (nested inside the list of images)"
        raise ConfigError(f"an image cannot be {what}; pass a path, PIL image, uint8 array or encoded bytes, or a flat "
                          "list of them")
    raise ConfigError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image, HW/HWC uint8 "
                      "array or encoded image bytes")


def _open_path(source) -> Image.Image:
    path = os.fspath(source)
    try:
        # NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except (OSError, ValueError, TypeError) as exc:  # ValueError: a NUL in the path
        raise ImageDecodeError(path, f"cannot open it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(path, "not a regular file (a folder, FIFO or device); pass image files only")
        if info.st_size == 0:
            raise ImageDecodeError(path, "file is empty (0 bytes)")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        return _decode(fh, path)


def _decode(stream, name: str) -> Image.Image:
    try:
        with Image.open(stream) as img:
            img.load()
            if 0 in img.size:
                raise ImageDecodeError(name, f"has no pixels (size {img.size[0]} x {img.size[1]})")
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(
            name, "not an image format Pillow can read (wrong extension or corrupt header)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise ImageDecodeError(name, f"{type(exc).__name__}: {exc}") from None


def resize_and_crop(img: Image.Image, spec: PreprocessSpec, *, exact: bool = False) -> np.ndarray:
    """Shortest edge to ``resize_to`` (Hugging Face CLIP's rounding), then a centre crop. Returns HWC uint8.

    Camera-sized images take ``fast_crop`` unless ``exact`` (the reference the fast path is measured against).
    """
    fast = None if exact else fast_crop(img, spec)
    if fast is not None:
        return fast
    target = spec.resize_to or spec.image_size
    crop = spec.image_size
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != target:
        new_short, new_long = target, int(target * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        box = None
        if new_short * new_long > RESIZE_PIXEL_BUDGET and new_long > crop:
            # Resize only the source band that becomes the centre ``crop`` pixels of the long side, at the
            # same scale. Pillow's two passes then round differently: equal on smooth images, half a level on
            # average on pixel noise (up to 25); only images past the budget take this path.
            first, scale = (new_long - crop) // 2, long / new_long
            low, high = first * scale, (first + crop) * scale
            box, size = ((0, low, w, high), (new_short, crop)) if w <= h else ((low, 0, high, h), (crop, new_short))
        img = img.resize(size, resample=_RESAMPLE[spec.interpolation], box=box, reducing_gap=None)
    arr = np.asarray(img, dtype=np.uint8)
    h, w = arr.shape[:2]
    if h < crop or w < crop:
        # Zero padding, the odd pixel before the image, as Hugging Face's CLIPImageProcessor does.
        pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
        arr = np.pad(arr, ((pad_h - pad_h // 2, pad_h // 2), (pad_w - pad_w // 2, pad_w // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return arr[top : top + crop, left : left + crop]


def _crop_box(w: int, h: int, spec: PreprocessSpec) -> tuple[tuple[float, float, float, float], float]:
    """The source rectangle that ``resize_and_crop`` turns into its centre crop, and its downscale factor
    (source pixels per output pixel along the shortest edge)."""
    target, crop = spec.resize_to or spec.image_size, spec.image_size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = target, int(target * long / short)
    first_short, first_long = (new_short - crop) // 2, (new_long - crop) // 2
    scale_short, scale_long = short / new_short, long / new_long
    along_short = (first_short * scale_short, (first_short + crop) * scale_short)
    along_long = (first_long * scale_long, (first_long + crop) * scale_long)
    x, y = (along_short, along_long) if w <= h else (along_long, along_short)
    return (x[0], y[0], x[1], y[1]), scale_short


def fast_crop(image: np.ndarray | Image.Image, spec: PreprocessSpec) -> np.ndarray | None:
    """The fast path for a camera-sized image (an RGB PIL image or HWC uint8 array of ``FAST_MIN_EDGE`` pixels
    or more on its short side, such as a 1920x1080 frame): only the pixels under the centre crop, and the filter's
    reach, are box-averaged by an integer factor before the resize. Arrays go to OpenCV where it is installed
    (``vledge.opencv_frames``: power-of-two blocks, several times faster), everything else to Pillow (blocks that
    leave ``FAST_REDUCING_GAP`` to its exact resize). Returns HWC uint8 at the tower's size, or None where the
    exact path applies: smaller images, images too close to the tower's size for a block of 2 x 2, crops that
    would pad, arrays that are not HWC RGB uint8.

    The average changes what the bicubic filter sees only below its own reach: a few levels from the exact path
    on photos (``tests/test_images.py``); the top-1 agreement is measured by ``benchmarks/camera_frames.py``.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return None
        h, w = image.shape[:2]
    elif isinstance(image, Image.Image) and image.mode == "RGB":
        w, h = image.size
    else:
        return None
    if min(w, h) < FAST_MIN_EDGE or (spec.resize_to or spec.image_size) < spec.image_size:
        return None
    box, scale = _crop_box(w, h, spec)
    use_opencv = isinstance(image, np.ndarray) and opencv_frames.available()
    count = opencv_frames.halvings(scale, FAST_MAX_BLOCK) if use_opencv else 0
    block = 2**count if use_opencv else min(int(scale / FAST_REDUCING_GAP), FAST_MAX_BLOCK)
    if block < 2:
        return None
    # Bicubic reads two output pixels either side; a block of the average adds one more reduced pixel. OpenCV's
    # resize gets three more, to start on a whole reduced pixel near the crop's (vledge.opencv_frames).
    reach = (6 if use_opencv else 3) * scale
    x0, y0 = max(0, int(box[0] - reach)), max(0, int(box[1] - reach))
    x1, y1 = min(w, int(np.ceil(box[2] + reach))), min(h, int(np.ceil(box[3] + reach)))
    # The margin is wider than a block and the filter's reach, so the partial blocks at its edges are never read.
    inner = ((box[0] - x0) / block, (box[1] - y0) / block, (box[2] - x0) / block, (box[3] - y0) / block)
    resample = _RESAMPLE[spec.interpolation]
    if use_opencv:
        x1, y1 = x0 + (x1 - x0) // block * block, y0 + (y1 - y0) // block * block
        return opencv_frames.reduce_and_resize(image[y0:y1, x0:x1], inner, spec.image_size, count, resample)
    if isinstance(image, np.ndarray) and image.flags.c_contiguous:
        # Pillow reads the region's rows in place (a row stride), one copy fewer than slicing it out first.
        start = (y0 * w + x0) * 3
        region = Image.frombuffer("RGB", (x1 - x0, y1 - y0), memoryview(image.reshape(-1))[start:], "raw", "RGB", w * 3, 1)
    elif isinstance(image, np.ndarray):
        region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    else:
        region = image.crop((x0, y0, x1, y1))
    size = (spec.image_size, spec.image_size)
    out = region.reduce(block).resize(size, resample=resample, box=inner, reducing_gap=None)
    return np.asarray(out, dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _normalise_table(spec: PreprocessSpec) -> np.ndarray:
    """(3, 256) float32: every uint8 level normalised per channel, by the float32 arithmetic that computing
    ``(x / 255 - mean) / std`` pixel by pixel does, so a lookup gives identical values, several times faster."""
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None]
    levels = np.arange(256, dtype=np.float32)[None, :] * np.float32(1 / 255)
    return np.ascontiguousarray((levels - mean) / std)


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """NHWC uint8 (or NHW / NHW1 grayscale, copied to three channels) -> NCHW float32, rescaled to [0, 1]
    and normalised by mean and std."""
    table = _normalise_table(spec)
    n, h, w = pixels.shape[:3]
    gray = pixels.ndim == 3 or pixels.shape[3] == 1
    if gray and n == 1:  # one camera frame: a single lookup
        return np.take(table, pixels.reshape(h, w), axis=1)[None]
    out = np.empty((n, 3, h, w), dtype=np.float32)
    if not gray and h * w >= LUT_MIN_PIXELS and opencv_frames.imported():
        for i in range(n):
            opencv_frames.look_up_planes(pixels[i], table, out[i])
        return out
    planes = pixels.reshape(n, h, w) if gray else pixels
    # One image plane at a time, looked up straight into its contiguous target ("clip": no bounds buffer; uint8
    # fits): 2.7x faster on a batch of 256 at 224 px than one fancy index per channel over the whole batch.
    for i in range(n):
        for c in range(3):
            np.take(table[c], planes[i] if gray else planes[i, ..., c], out=out[i, c], mode="clip")
    return out


def _at_size(source, spec: PreprocessSpec) -> bool:
    """True for an HW, HW1 or HWC uint8 array that resizing and cropping would leave as it is."""
    size = spec.image_size
    return (
        isinstance(source, np.ndarray)
        and source.dtype == np.uint8
        and source.shape[:2] == (size, size)
        and (source.ndim == 2 or (source.ndim == 3 and source.shape[2] in (1, 3)))
        and (spec.resize_to or size) == size
    )


def is_one_image(images) -> bool:
    """True for one image (a path, PIL image, HW / HWC array, encoded bytes or a binary stream); False for a
    sequence, an NHWC array or any other iterable of images."""
    if isinstance(images, np.ndarray):
        return images.ndim <= 3
    return isinstance(images, (str, os.PathLike, Image.Image, *_BYTES)) or hasattr(images, "read")


CHANNEL_ORDERS = ("rgb", "bgr")


def check_channels(channels) -> str:
    """``channels`` if it is a channel order this module knows, else a ConfigError."""
    if channels not in CHANNEL_ORDERS:
        raise ConfigError(f"channels must be 'rgb' or 'bgr' (OpenCV frames), got {channels!r:.40}")
    return channels


def as_rgb(image, channels: str):
    """An HWC array in ``channels`` order (``"bgr"``: OpenCV's BGR or BGRA) as RGB(A), a view where possible.
    Grayscale arrays, PIL images, paths and encoded bytes carry their own channel order and are returned as
    they are."""
    if channels == "bgr" and isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., ::-1] if image.shape[2] == 3 else image[..., [2, 1, 0, 3]]
    return image


def iter_images(images) -> Iterator:
    """One image (a path, PIL image, HW / HWC array, encoded bytes or stream) as an iterator of one; a
    sequence, an NHWC array or any other iterable (a generator of frames) item by item, without listing it."""
    if is_one_image(images):
        return iter([images])
    if isinstance(images, np.ndarray):
        return iter(images)
    if images is None or isinstance(images, Mapping):
        raise ConfigError(f"images cannot be {'None' if images is None else 'a mapping'}; pass an image (path, PIL "
                          "image, uint8 array, encoded bytes) or a list of them")
    try:
        return iter(images)
    except TypeError:
        raise ConfigError(f"images must be an image (path, PIL image, uint8 array, encoded bytes) or a list of them, "
                          f"got {type(images).__name__}") from None


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list:
    """One image as a list of one; a sequence, NHWC array or other iterable as a list."""
    return list(iter_images(images))


def preprocess(images: ImageInput | Sequence[ImageInput], spec: PreprocessSpec) -> np.ndarray:
    """Decode, resize, crop and normalise images into a float32 NCHW batch.

    Arrays already at the tower's size (camera frames, Fashion-MNIST) skip Pillow: the result is the same.
    """
    if _at_size(images, spec):  # one array at the tower's size, as a camera at that size sends it
        return normalize(images[None], spec)
    items = as_image_list(images)
    if not items:
        raise ConfigError("no images given")
    if len(items) == 1 and _at_size(items[0], spec):
        return normalize(items[0][None], spec)
    if all(_at_size(im, spec) and im.shape == items[0].shape for im in items):
        return normalize(np.stack(items), spec)
    return normalize(np.stack([_resized(im, spec) for im in items]), spec)


def _resized(image, spec: PreprocessSpec) -> np.ndarray:
    fast = fast_crop(image, spec) if isinstance(image, np.ndarray) else None
    return fast if fast is not None else resize_and_crop(open_image(image), spec)


def preprocess_uint8_batch(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Fast path for an NHW or NHWC uint8 batch (e.g. Fashion-MNIST); resized and cropped when not at size."""
    if len(pixels) and not _at_size(pixels[0], spec):
        return preprocess(list(pixels), spec)
    return normalize(pixels, spec)
