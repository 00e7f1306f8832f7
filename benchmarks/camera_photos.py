"""Real photos for the camera benchmarks: scikit-image's sample photos (offline), cropped into many views,
and the same views upscaled to full-HD frames. No torch."""

from __future__ import annotations

import numpy as np
from PIL import Image

# scikit-image photos that ship inside its wheel (others download on first use, which is impossible here).
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "moon", "page", "text",
               "clock", "immunohistochemistry", "hubble_deep_field", "grass", "gravel", "brick", "logo", "colorwheel",
               "cat", "retina", "motorcycle")
FULL_HD = (1920, 1080)


def photos() -> list[np.ndarray]:
    """Every bundled photo as HWC uint8 RGB (grayscale copied to three channels, alpha dropped)."""
    import skimage.data

    out = []
    for name in PHOTO_NAMES:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # not bundled in this version (would need a download)
            continue
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-9))).astype(np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] >= 3 and min(image.shape[:2]) >= 64:
            out.append(np.ascontiguousarray(image[..., :3]))
    return out


def views(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` seeded crops (a random half to whole of a photo's short side, mirrored at random), of any size."""
    rng = np.random.default_rng(seed)
    images = photos()
    out = []
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        side = int(rng.uniform(0.5, 1.0) * min(h, w))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = image[top : top + side, left : left + int(side * rng.uniform(1.0, min(w / side, 16 / 9)))]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def full_hd(image: np.ndarray) -> np.ndarray:
    """``image`` stretched to a 1920x1080 RGB frame (bicubic), as a camera would deliver it."""
    return np.asarray(Image.fromarray(image).resize(FULL_HD, Image.Resampling.BICUBIC))
