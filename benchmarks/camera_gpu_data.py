"""A camera-sized training set from Fashion-MNIST: colourised, scaled and placed on coloured 160 px canvases.

Each 28 px garment is tinted with a random colour, scaled to 64-144 px, placed at a random spot of a 160 x 160
canvas of another random colour with a little noise, and mirrored at random; the training transform then takes
it to 224 px. Written as an ImageFolder tree (``train/<class>/*.png``, ``test/<class>/*.png``) that ``vledge
train``, ``compress``, ``eval`` and ``check`` read with ``--data DIR``. Used by ``benchmarks/device_checks.sh``.

    .venv/bin/python benchmarks/camera_gpu_data.py --out DIR [--train 20000] [--test 2000]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CANVAS = 160


def camera_view(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 28 x 28 grayscale garment as a coloured object on a coloured, slightly noisy canvas."""
    size = int(rng.integers(64, 145))
    mask = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC), np.float32)[..., None] / 255
    colour = rng.uniform(0.25, 1.0, 3).astype(np.float32) * 255
    background = rng.uniform(0, 255, 3).astype(np.float32)
    canvas = np.broadcast_to(background, (CANVAS, CANVAS, 3)).copy()
    canvas += rng.normal(0, 6, canvas.shape).astype(np.float32)
    top, left = rng.integers(0, CANVAS - size + 1, 2)
    patch = canvas[top : top + size, left : left + size]
    canvas[top : top + size, left : left + size] = patch * (1 - mask) + colour * mask
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return Image.fromarray(image[:, ::-1] if rng.random() < 0.5 else image)


def _write(job: tuple) -> int:
    split, start, images, labels, classes, out, seed = job
    rng = np.random.default_rng(seed)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = out / split / classes[int(label)].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        camera_view(pixels, rng).save(folder / f"{start + i:06d}.png")
    return len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    from vledge.data import load_dataset

    jobs = []
    for split, count in (("train", args.train), ("test", args.test)):
        data = load_dataset("fashion-mnist", split)
        picked = np.random.default_rng(len(split)).choice(len(data), size=min(count, len(data)), replace=False)
        images = np.stack([np.asarray(data.image(int(i))) for i in picked])
        labels = np.asarray([data.label(int(i)) for i in picked])
        for n, start in enumerate(range(0, len(picked), 1000)):
            jobs.append((split, start, images[start : start + 1000], labels[start : start + 1000], data.classes,
                         args.out, 1000 * (split == "test") + n))
    with ProcessPoolExecutor(args.workers) as pool:
        written = sum(pool.map(_write, jobs))
    print(f"{written} images -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
