"""One row of the camera benchmark, measured in a process of its own (peak memory never mixes between rows).

A row is a bundle (``vledge.load``: towers, ``classify`` of a 1920x1080 frame, the Python side of a batch-1
``classify``) or a raw FP32 ONNX export (the teacher's, or the student's before quantization) opened directly
in ONNX Runtime or OpenVINO. Tower times come from the same call for both kinds (``runtime.run`` / session run
on the same feeds), so ratios compare towers, not wrappers.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import numpy as np

LONG_PROMPT = " ".join(["a photo of a person carrying a parcel to the door at night"] * 10)  # past 77 tokens


def median_ms(fn, repeats: int) -> float:
    return paired_median_ms({"call": fn}, repeats)["call"]


def paired_median_ms(calls: dict, repeats: int, block: int = 5) -> dict:
    """Median milliseconds of each of ``calls``, ``repeats`` times each, run in alternating blocks of ``block``
    calls: a call's blocks run back to back, as a camera loop runs frames, and the machine's speed, which
    moves from second to second on a shared VM, moves every call's times alike, so their ratios hold."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    while len(times[next(iter(calls))]) < repeats:
        for name, fn in calls.items():
            for _ in range(min(block, repeats - len(times[name]))):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM``, not ``getrusage``: Linux carries ru_maxrss over an exec,
    so a row process would report its parent's peak (the benchmark holding a 151M-parameter teacher)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def folder_mb(path: Path, pattern: str = "**/*") -> float:
    return round(sum(f.stat().st_size for f in Path(path).glob(pattern) if f.is_file()) / 1e6, 2)


def frame(seed: int = 0) -> np.ndarray:
    """A 1920x1080 uint8 RGB frame: a real photo stretched to full HD (scikit-image), noise without it."""
    try:
        from camera_photos import full_hd, photos

        return full_hd(photos()[seed % 3])
    except ImportError:
        return np.random.default_rng(seed).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


def write_frames(folder: Path) -> Path:
    """The rows' two frames as ``frame-0.npy`` and ``frame-1.npy`` in ``folder``. Made here, not in the row
    processes: scikit-image and its decoded photos would add about 75 MB to a row's peak memory."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in (0, 1):
        np.save(folder / f"frame-{seed}.npy", frame(seed))
    return folder


def load_frame(frames: str, seed: int) -> np.ndarray:
    return np.load(Path(frames) / f"frame-{seed}.npy", allow_pickle=False)


def bundle_row(path: str, threads: int, repeats: int, device: str, frames: str) -> dict:
    """Towers at batch 1 and 8, a 77-token prompt, ``classify`` of a full-HD frame and the Python time of a
    batch-1 ``classify``, for the bundle at ``path`` on ``device``; the frames come from ``write_frames``. Peak
    memory is read before the batches of 8 (``peak_rss_mb``, a process classifying frames) and after them."""
    import vledge
    from vledge.images import preprocess

    import logging

    logging.disable(logging.WARNING)  # the row's JSON is the last line of stdout; keep the log off it
    model = vledge.load(path, device=device, threads=threads)
    spec = model.manifest.preprocess
    size = spec.image_size
    photo = np.ascontiguousarray(load_frame(frames, 0)[:size, :size])
    pixel = preprocess(photo, spec)
    first = next(iter(model.runtime.input_shapes("image").values()))
    static = first[0] if isinstance(first[0], int) else None
    ids, mask = model.tokenizer([LONG_PROMPT], pad_to_max=True)
    text_feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
    run = model.runtime.run
    full_hd = load_frame(frames, 1)

    def tower_b1():
        return run("image", {"pixel_values": pixel})

    # The frame and the photo against the tower they wrap, timed together: ratios taken from separate runs
    # moved by up to 0.3x with the machine's speed. The tower alone, as the FP32 rows time theirs, stays
    # image_b1_p50_ms.
    paired = paired_median_ms({"tower": tower_b1, "frame": lambda: model.classify(full_hd),
                               "photo": lambda: model.classify(photo)}, repeats)
    row = {
        "frame_b1_p50_ms": paired["frame"],
        "frame_tower_b1_p50_ms": paired["tower"],
        "python_us": round(max(paired["photo"] - paired["tower"], 0) * 1000, 1),
        "text_b1_p50_ms": median_ms(lambda: run("text", text_feeds), repeats),
        "text_tokens": int(ids.shape[1]),
        # What a process classifying frames (and embedding a prompt) peaks at; the batches of 8 come after.
        "peak_rss_mb": peak_rss_mb(),
        "image_b1_p50_ms": median_ms(tower_b1, repeats),
    }
    pixels = np.repeat(pixel, 8, axis=0)
    row["image_b8_p50_ms"] = None if static == 1 else median_ms(lambda: run("image", {"pixel_values": pixels}),
                                                                 max(3, repeats // 4))
    info = model.info()
    row.update({"placement": f"{info.get('backend')}:{info.get('device')}", "size_mb": folder_mb(Path(path)),
                "precision": _precision(model), "peak_rss_b8_mb": peak_rss_mb()})
    return row


def _precision(model) -> str:
    return "/".join(sorted({tower.precision for tower in model.manifest.towers.values()}))


def onnx_row(image_path: str, text_path: str, threads: int, repeats: int, backend: str, tokens: int) -> dict:
    """FP32 ONNX towers opened directly: ``onnxruntime`` (CPU) or ``openvino`` (CPU, FP32 inference precision)."""
    run = _ort_runner if backend == "onnxruntime" else _openvino_runner
    image, text = run(image_path, threads), run(text_path, threads)
    size = image.size
    pixels = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
    ids = np.ones((1, tokens), np.int64)
    ids[0, -1] = 2
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return {
        "image_b1_p50_ms": median_ms(lambda: image({"pixel_values": pixels[:1]}), repeats),
        "image_b8_p50_ms": median_ms(lambda: image({"pixel_values": pixels}), max(3, repeats // 4)),
        "text_b1_p50_ms": median_ms(lambda: text(feeds), repeats), "text_tokens": tokens,
        "frame_b1_p50_ms": None, "python_us": None, "precision": "fp32",
        "placement": f"{backend}:cpu", "peak_rss_mb": peak_rss_mb(),
    }


def _ort_runner(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(feeds):
        return session.run(None, {k: v for k, v in feeds.items() if k in names})

    names = {i.name for i in session.get_inputs()}
    shape = session.get_inputs()[0].shape
    run.size = shape[-1] if isinstance(shape[-1], int) else 224
    return run


def _openvino_runner(path: str, threads: int):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                  "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    # An input may carry several tensor names (``get_any_name`` can give an inner one): match any of them.
    names = {name for port in compiled.inputs for name in port.get_names()}

    def run(feeds):
        given = {k: v for k, v in feeds.items() if k in names}
        if len(given) != len(compiled.inputs):
            raise ValueError(f"{path}: inputs {sorted(names)}, got {sorted(feeds)}")
        return request.infer(given)

    shape = compiled.inputs[0].get_partial_shape()
    run.size = shape[-1].get_length() if shape[-1].is_static else 224
    return run


def baseline_row(backend: str) -> dict:
    """The resident memory of a process that imported vledge, the backend and what reduces full-HD frames
    (OpenCV where installed), before any model."""
    from vledge import opencv_frames

    __import__("onnxruntime" if backend == "onnxruntime" else "openvino")
    if opencv_frames.available():
        __import__("cv2")
    return {"peak_rss_mb": peak_rss_mb()}


ROWS = {"bundle_row": bundle_row, "onnx_row": onnx_row, "baseline_row": baseline_row}

if __name__ == "__main__":
    import json
    import sys

    call = json.loads(sys.argv[1])
    print(json.dumps(ROWS[call["fn"]](*call["args"])))
