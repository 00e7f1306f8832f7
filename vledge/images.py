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


def resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Shortest edge to ``resize_to`` (Hugging Face CLIP's rounding), then a centre crop. Returns HWC uint8."""
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
    for c in range(3):
        channel = pixels.reshape(n, h, w) if gray else pixels[..., c]
        if n == 1:  # a contiguous target: look up straight into it ("clip": no bounds buffer; uint8 fits)
            np.take(table[c], channel[0], out=out[0, c], mode="clip")
        else:
            out[:, c] = table[c][channel]
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
    items = as_image_list(images)
    if not items:
        raise ConfigError("no images given")
    if len(items) == 1 and _at_size(items[0], spec):
        return normalize(items[0][None], spec)
    if all(_at_size(im, spec) and im.shape == items[0].shape for im in items):
        return normalize(np.stack(items), spec)
    return normalize(np.stack([resize_and_crop(open_image(im), spec) for im in items]), spec)


def preprocess_uint8_batch(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Fast path for an NHW or NHWC uint8 batch (e.g. Fashion-MNIST); resized and cropped when not at size."""
    if len(pixels) and not _at_size(pixels[0], spec):
        return preprocess(list(pixels), spec)
    return normalize(pixels, spec)
