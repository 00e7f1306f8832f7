"""Full-HD frames: does the fast path (``vledge.images.fast_crop``) give the training transform's top-1, and how fast is it?

Each test image is upscaled (bicubic) to 1080 x 1080 and centred on a black 1920 x 1080 frame, so the centre crop
sees the whole image, as a camera pointed at it would. Every frame is preprocessed twice: the exact path
(``resize_and_crop(..., exact=True)``, what training and evaluation of small images do) and the fast path
``preprocess`` takes for such frames; the model's zero-shot top-1 over the data set's classes must agree on at
least 99.5% of frames. Also timed: the preprocessing of one frame, exact and fast (median, one thread). Both fast
paths are measured: OpenCV's (where cv2 is installed) and Pillow's.

    .venv/bin/python benchmarks/camera_frames.py --teacher DIR [--data fashion-mnist] [--count 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from camera_rows import median_ms

from vledge import opencv_frames

FRAME = (1920, 1080)


def to_frame(image) -> np.ndarray:
    """An image (HW or HWC uint8) upscaled to 1080 x 1080 RGB, centred on a black 1920 x 1080 frame."""
    square = Image.fromarray(np.asarray(image)).convert("RGB").resize((FRAME[1], FRAME[1]), Image.Resampling.BICUBIC)
    frame = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
    left = (FRAME[0] - FRAME[1]) // 2
    frame[:, left : left + FRAME[1]] = np.asarray(square)
    return frame


def exact_pixels(frame: np.ndarray, spec) -> np.ndarray:
    from vledge.images import normalize, open_image, resize_and_crop

    return normalize(resize_and_crop(open_image(frame), spec, exact=True)[None], spec)


def agreement(model, data, count: int, seed: int = 0) -> dict:
    """Top-1 of exact and fast preprocessing on ``count`` frames of ``data``, with the model's own prompts."""
    import torch

    from vledge.evaluate import TorchEmbedder, class_embeddings
    from vledge.images import preprocess

    classes = class_embeddings(TorchEmbedder(model), data.classes, data.templates)
    picked = np.sort(np.random.default_rng(seed).choice(len(data), size=min(count, len(data)), replace=False))
    same = exact_right = fast_right = 0
    worst = 0.0
    for i in picked:
        frame = to_frame(data.image(int(i)))
        pixels = np.concatenate([exact_pixels(frame, model.preprocess), preprocess(frame, model.preprocess)])
        with torch.no_grad():
            emb = model.encode_image(torch.from_numpy(pixels)).numpy()
        top = (emb @ classes.T).argmax(axis=1)
        same += int(top[0] == top[1])
        exact_right += int(top[0] == data.label(int(i)))
        fast_right += int(top[1] == data.label(int(i)))
        worst = max(worst, float(np.abs(pixels[0] - pixels[1]).max()))
    n = len(picked)
    return {"frames": n, "top1_agreement": round(same / n, 5), "top1_exact": round(exact_right / n, 4),
            "top1_fast": round(fast_right / n, 4), "max_abs_diff_normalised": round(worst, 4)}


@contextlib.contextmanager
def pillow_only(active: bool):
    """Pillow's fast path even where OpenCV is installed, while ``active``."""
    saved = opencv_frames.available
    if active:
        opencv_frames.available = lambda: False
    try:
        yield
    finally:
        opencv_frames.available = saved


def timing(spec, frame: np.ndarray) -> dict:
    from vledge.images import preprocess

    exact, fast = median_ms(lambda: exact_pixels(frame, spec), 15), median_ms(lambda: preprocess(frame, spec), 15)
    return {"preprocess_exact_ms": exact, "preprocess_fast_ms": fast, "speedup": round(exact / fast, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a trained model folder (load_teacher reads it)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "camera" / "frames.json")
    args = parser.parse_args(argv)
    import torch

    from vledge.cpu import host_cpu
    from vledge.data import load_dataset
    from vledge.images import PreprocessSpec
    from vledge.models import load_teacher

    torch.set_num_threads(1)
    model = load_teacher(args.teacher).eval()
    data = load_dataset(args.data, "test")
    frame = to_frame(data.image(0))
    result = {"model": str(args.teacher), "image_size": model.preprocess.image_size, "data": f"{args.data} test split",
              "cpu": host_cpu().to_dict(), "threads": 1}
    for resizer in ("opencv", "pillow") if opencv_frames.available() else ("pillow",):
        with pillow_only(resizer == "pillow"):
            result[resizer] = {"agreement": agreement(model, data, args.count),
                               "timing_model_size": timing(model.preprocess, frame),
                               "timing_224": timing(PreprocessSpec(224), frame)}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
