"""Camera frames reduced by OpenCV, where it is installed (``vledge[video]``): the fast path's box average and
resize in OpenCV's vectorised code, read straight from the frame's memory (a view, no copy into Pillow).

Blocks are powers of two, averaged by repeated 2x2 halving (OpenCV's fastest reduction: the exact rounded mean
of each block). What remains, a resize of less than 2x, is OpenCV's separable bicubic interpolation up to 1.5x
(at the exact scale, begun on the whole reduced pixel that puts an output pixel nearest the crop's edge),
else Pillow's antialiased bicubic on the already small image. Against the exact transform this is softer than the
Pillow path (a 4x4 box rather than 3x3 for a 224-px tower at 1080p): ``tests/test_images.py`` bounds both, and
``benchmarks/camera_frames.py`` measures their top-1 agreement with the exact path.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

import numpy as np
from PIL import Image

# OpenCV's bicubic samples without widening its kernel: past this factor it aliases (720p for 224 px: 1.6x,
# up to 58 levels off the exact path on a photo), and Pillow finishes.
_INTERPOLATE_UP_TO = 1.5
# Output pixels searched before the crop for the whole-pixel start nearest its own: the fast path's margin holds
# this many and the filter's reach.
_SEARCH_OUTPUT_PIXELS = 3


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True where OpenCV (``cv2``) can be imported; it is then imported on the first large frame."""
    return importlib.util.find_spec("cv2") is not None


def imported() -> bool:
    """True once OpenCV is imported (by the first large frame, or by the caller): small images then use it
    too, without paying its resident memory for them alone."""
    return "cv2" in sys.modules and available()


def halvings(scale: float, max_block: int) -> int:
    """How many 2x2 halvings leave a resize of at least 1x for a downscale of ``scale``, with blocks of at most
    ``max_block`` pixels."""
    count = 0
    while scale / 2 ** (count + 1) >= 1.0 and 2 ** (count + 1) <= max_block:
        count += 1
    return count


def reduce_and_resize(region: np.ndarray, inner: tuple[float, float, float, float], size: int, count: int,
                      resample: int) -> np.ndarray:
    """``region`` (an HWC uint8 view whose sides are multiples of ``2 ** count``) halved ``count`` times, then
    the rectangle ``inner`` (in halved pixels) resized to ``size`` x ``size``. Returns HWC uint8."""
    import cv2

    for _ in range(count):
        region = cv2.resize(region, (region.shape[1] // 2, region.shape[0] // 2), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = inner
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    if max(sx, sy) > _INTERPOLATE_UP_TO:
        out = Image.fromarray(np.ascontiguousarray(region)).resize((size, size), resample=resample, box=inner,
                                                                   reducing_gap=None)
        return np.asarray(out, dtype=np.uint8)
    # OpenCV's separable resize (4x faster than a warp) at the exact scale, started on the whole reduced pixel
    # that puts an output pixel's centre nearest the crop's; the margin beyond the crop is read, not clamped.
    (qx, left), (qy, top) = _whole_pixel_start(x0, sx), _whole_pixel_start(y0, sy)
    flags = cv2.INTER_CUBIC if resample == Image.Resampling.BICUBIC else cv2.INTER_LINEAR
    out = cv2.resize(region[top:, left:], None, fx=1 / sx, fy=1 / sy, interpolation=flags)[qy : qy + size, qx : qx + size]
    if out.shape[:2] != (size, size):  # a frame side not a whole number of blocks: its partial block is not read
        out = np.pad(out, ((0, size - out.shape[0]), (0, size - out.shape[1]), (0, 0)), mode="edge")
    return out


def _whole_pixel_start(edge: float, scale: float) -> tuple[int, int]:
    """``(q, start)``: the whole pixel ``start`` (>= 0) to begin a resize by ``scale`` at, and the output pixel
    ``q`` of that resize (at most ``_SEARCH_OUTPUT_PIXELS``) that lands nearest to where pixel 0 of a resize
    begun at ``edge`` would."""
    candidates = [(q, edge - q * scale) for q in range(_SEARCH_OUTPUT_PIXELS + 1) if edge - q * scale >= 0]
    q, start = min(candidates, key=lambda c: abs(c[1] - round(c[1])))
    return q, round(start)


def look_up_planes(image: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """Each channel of the HWC uint8 ``image`` looked up in its row of ``table`` (3, 256) into ``out[c]`` (a
    C-contiguous (3, H, W) float32 array): the same values as numpy's ``take``, in half its time (no index
    conversion to int64)."""
    import cv2

    for c, plane in enumerate(cv2.split(image)):
        written = cv2.LUT(plane, table[c : c + 1], dst=out[c])
        if written.ctypes.data != out[c].ctypes.data:  # OpenCV allocated its own result after all
            out[c] = written
