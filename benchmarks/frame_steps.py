"""Where a full-HD frame's time goes beside a bundle's image tower (ONNX Runtime): each step of the frame path
on its own, and the tower alone and right after a frame's preprocessing, timed in alternating blocks in one
process (``camera_rows.paired_median_ms``). Run on a quiet machine, from the repository root, on a camera
benchmark's bundle and frames:
    .venv/bin/python benchmarks/frame_steps.py WORK/bundles/clip-vit-b32-camera-vit-shrink-cpu WORK/frames
Prints the median milliseconds of each step.
"""

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from camera_rows import load_frame, paired_median_ms  # noqa: E402

import vledge  # noqa: E402
from vledge.images import fast_crop, normalize, preprocess  # noqa: E402

REPEATS = 100


def main(bundle: str, frames: str) -> None:
    model = vledge.load(bundle)
    spec, run = model.manifest.preprocess, model.runtime.run
    frame = load_frame(frames, 1)
    pixel = preprocess(np.ascontiguousarray(load_frame(frames, 0)[: spec.image_size, : spec.image_size]), spec)
    crop = fast_crop(frame, spec)
    side = min(frame.shape[:2])
    left = (frame.shape[1] - side) // 2
    region = frame[:, left : left + side]
    half = cv2.resize(region, (side // 2, side // 2), interpolation=cv2.INTER_AREA)
    quarter = cv2.resize(half, (side // 4, side // 4), interpolation=cv2.INTER_AREA)
    scale = spec.image_size / quarter.shape[0]
    after_frame = []

    def tower_after_frame():
        x = preprocess(frame, spec)
        start = time.perf_counter()
        run("image", {"pixel_values": x})
        after_frame.append((time.perf_counter() - start) * 1000)

    steps = {
        "tower": lambda: run("image", {"pixel_values": pixel}),
        "preprocess (all of it)": lambda: preprocess(frame, spec),
        "fast_crop": lambda: fast_crop(frame, spec),
        "first 2x2 halving of the crop": lambda: cv2.resize(region, half.shape[1::-1], interpolation=cv2.INTER_AREA),
        "second 2x2 halving": lambda: cv2.resize(half, quarter.shape[1::-1], interpolation=cv2.INTER_AREA),
        "bicubic to the tower's size": lambda: cv2.resize(quarter, None, fx=scale, fy=scale,
                                                          interpolation=cv2.INTER_CUBIC),
        "normalize": lambda: normalize(crop[None], spec),
        "preprocess, then the tower": tower_after_frame,
        "classify": lambda: model.classify(frame, top_k=1),
    }
    times = paired_median_ms(steps, REPEATS)
    times["the tower right after preprocessing"] = round(float(np.median(after_frame)), 3)
    for step, ms in times.items():
        print(f"{step}: {ms:.3f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:3])
