"""Videos made in the tests with PyAV, from Fashion-MNIST images (or seeded noise where the data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def fashion_images(indices) -> list[np.ndarray]:
    """Fashion-MNIST test images as (28, 28, 3) uint8 RGB."""
    import pytest

    from vledge.data.fashion_mnist import read_idx

    if not FASHION.is_file():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images = read_idx(FASHION)
    return [np.repeat(images[i][:, :, None], 3, axis=2) for i in indices]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "ffv1") -> Path:
    """Encode RGB frames: ffv1 in Matroska is lossless (decoded pixels equal these exactly); libx264 and
    mpeg4 are the lossy codecs cameras send."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
