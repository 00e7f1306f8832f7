"""Camera frames reduced by OpenCV, where it is installed (``vledge[video]``): the fast path's box average and
resize in OpenCV's vectorised code, read straight from the frame's memory (a view, no copy into Pillow).

Blocks are powers of two, averaged by repeated 2x2 halving (OpenCV's fastest reduction: the exact rounded mean
of each block). What remains, a resize of less than 2x, is OpenCV's bicubic interpolation up to 1.5x, else
Pillow's antialiased bicubic on the already small image. Against the exact transform this is softer than the
Pillow path (a 4x4 box rather than 3x3 for a 224-px tower at 1080p): ``tests/test_images.py`` bounds both, and
``benchmarks/camera_frames.py`` measures their top-1 agreement with the exact path.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
from PIL import Image

# OpenCV's bicubic samples without widening its kernel: past this factor it aliases (720p for 224 px: 1.6x,
# up to 58 levels off the exact path on a photo), and Pillow finishes.
_INTERPOLATE_UP_TO = 1.5


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True where OpenCV (``cv2``) can be imported; it is then imported on the first large frame."""
    return importlib.util.find_spec("cv2") is not None


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
    # Output pixel centres mapped into the region, as Pillow's resize with ``box`` places them.
    to_region = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])
    flags = (cv2.INTER_CUBIC if resample == Image.Resampling.BICUBIC else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(region, to_region, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
