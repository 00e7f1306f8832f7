"""One benchmark row, measured in a process of its own so that memory peaks of rows never mix.

``python -m vledge.bench.worker JOB.json RESULT.json`` opens one model, a bundle or checkpoint through
``vledge.load`` or a peer through ``vledge.bench.peer_model``, and measures, in this order (peak memory
only grows, so the runtime's peak is read before evaluation loads the data set): tower latency at
batch 1 and 8, for a bundle the Python-side time of batch-1 ``classify`` and one full-HD frame end to
end, the batch-size curves when asked, peak memory; then zero-shot accuracy and embedding cosine to the
teacher.

``python -m vledge.bench.worker --baseline BACKEND RESULT.json PROBE.npz [EMPTY.onnx]`` measures a
backend's own baseline: the peak memory after what every row does before loading its bundle (imports,
reading the probe images) and a session on a one-node graph.

Nothing here imports torch unless the row runs the PyTorch backend.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from vledge.bench.measure import BackgroundMeter, Repetitions, latency_stats, peak_rss_mb, time_interleaved

BATCHES = (1, 8)
FRAME_SIZE = (1920, 1080)  # width, height of the camera frame classified end to end


class EdgeSubject:
    """What the measurements use of an ``EdgeModel``, through its public API."""

    def __init__(self, edge):
        self.edge = edge
        self.preprocess = edge.manifest.preprocess
        self.tokenizer = edge.tokenizer
        self.inputs = {kind: [(t.name, t.dtype) for t in tower.inputs] for kind, tower in edge.manifest.towers.items()}
        self.static_text = any(isinstance(s[-1], int) for s in edge.runtime.input_shapes("text").values())

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.edge.runtime.run(kind, feeds)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.edge.encode_pixels(pixels)

    def embed_texts(self, texts) -> np.ndarray:
        return self.edge.encode_text(list(texts))

    def info(self) -> dict:
        return self.edge.info()


def _feeds(subject, kind: str, batch: int, pixels: np.ndarray, texts: list[str]) -> dict[str, np.ndarray]:
    """The tower's input arrays at ``batch`` (images and prompts repeated when there are fewer)."""
    if kind == "image":
        arrays = [np.resize(pixels, (batch, *pixels.shape[1:])) if len(pixels) < batch else pixels[:batch]]
    else:
        arrays = list(subject.tokenizer([texts[i % len(texts)] for i in range(batch)], pad_to_max=subject.static_text))
    return {name: a.astype(dtype, copy=False) for (name, dtype), a in zip(subject.inputs[kind], arrays)}


def _time_tower(subject, kind: str, batch: int, pixels, texts, reps: Repetitions):
    """Seconds per call of one tower at one batch size, and the feed it ran on."""
    feed = _feeds(subject, kind, batch, pixels, texts)
    subject.run(kind, feed)
    (times,) = time_interleaved([lambda: subject.run(kind, feed)], reps)
    return times, feed


def _latency(subject, pixels, texts, reps: Repetitions, notes: list[str]) -> tuple[dict, dict, float | None]:
    """p50 / p95 / throughput of each tower at each batch size, the feeds that worked, and the CPU
    cores other processes used meanwhile.

    Each cell is timed in a block of its own: alternating batch sizes on one dynamic-shape model
    made OpenVINO re-prepare its kernels on every call (4x slower at batch 1 than a steady stream).
    """
    stats, feeds = {}, {}
    with BackgroundMeter() as background:
        for kind in ("image", "text"):
            for batch in BATCHES:
                key = f"{kind}_b{batch}"
                try:
                    times, feeds[key] = _time_tower(subject, kind, batch, pixels, texts, reps)
                except Exception as exc:  # a static-shape bundle cannot take every batch: note it, go on
                    notes.append(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                stats[key] = latency_stats(times, batch)
    return stats, feeds, background.cores


def _curves(subject, pixels, texts, batches, reps: Repetitions, notes: list[str]) -> dict:
    """Median ms per call of each tower at each of ``batches``: ``{"image"|"text": {batch: ms}}``."""
    out = {"image": {}, "text": {}}
    for kind in out:
        for batch in batches:
            try:
                times, _ = _time_tower(subject, kind, batch, pixels, texts, reps)
            except Exception as exc:  # a static batch: a gap in the curve
                notes.append(f"curve {kind} batch {batch}: {type(exc).__name__}: {str(exc)[:160]}")
                continue
            out[kind][str(batch)] = latency_stats(times)["p50_ms"]
    return out


def _frame(image: np.ndarray) -> np.ndarray:
    """A full-HD RGB uint8 frame made from a probe image, as a camera would deliver it."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("RGB").resize(FRAME_SIZE, Image.BILINEAR))


def _overhead(edge, image: np.ndarray, classes: list[str], feeds: dict, reps: Repetitions) -> dict:
    """Python-side work of batch-1 ``classify``, and one full-HD frame classified end to end.

    ``classify`` with the compiled label set (else the data set's classes; label embeddings cached
    after the first call, as on a device that classifies a stream), interleaved with the bare image
    tower on the same preprocessed image: ``python_us`` is their difference. Full-HD frames are timed
    back to back, as a camera loop classifies them. ``encode_text(prompt)``
    against the bare text-tower call the same way.
    """
    from vledge.images import preprocess

    out = {}
    labels = None if edge.label_set is not None else classes or None
    if "image_b1" in feeds and (labels or edge.label_set is not None):
        frame, feed, spec = _frame(image), feeds["image_b1"], edge.manifest.preprocess
        edge.classify(frame, labels, top_k=1)
        e2e, tower, prep = time_interleaved([
            lambda: edge.classify(image, labels, top_k=1),
            lambda: edge.runtime.run("image", feed),
            lambda: preprocess(image, spec),
        ], reps)
        # Frames in a block of their own, one after another as a camera loop runs them: between the calls
        # above, a frame's 6 MB would evict what they use and bill it to their Python side.
        (full_hd,) = time_interleaved([lambda: edge.classify(frame, labels, top_k=1)], reps)
        e2e_ms, tower_ms = latency_stats(e2e)["p50_ms"], latency_stats(tower)["p50_ms"]
        out.update(classify_b1_p50_ms=e2e_ms, image_tower_b1_p50_ms=tower_ms, classify_share=max(0.0, 1 - tower_ms / e2e_ms),
                   python_us=max(0.0, e2e_ms - tower_ms) * 1e3, preprocess_p50_ms=latency_stats(prep)["p50_ms"],
                   frame_b1_p50_ms=latency_stats(full_hd)["p50_ms"])
    if "text_b1" in feeds:
        prompt = "a photo of a " + classes[0] + "." if classes else "a photo"
        ids = edge.tokenizer([prompt])
        feed = {spec.name: a.astype(spec.dtype) for spec, a in zip(edge.manifest.towers["text"].inputs, ids)}
        e2e, tower = time_interleaved([lambda: edge.encode_text(prompt), lambda: edge.runtime.run("text", feed)], reps)
        e2e_ms, tower_ms = latency_stats(e2e)["p50_ms"], latency_stats(tower)["p50_ms"]
        out["encode_text_b1_p50_ms"] = e2e_ms
        out["text_tower_b1_p50_ms"] = tower_ms
        out["encode_text_share"] = max(0.0, 1 - tower_ms / e2e_ms)
    return out


def _cosine(subject, probe_images: list, texts: list[str], job: dict) -> dict:
    """Mean cosine of this row's embeddings to the teacher's on the probe images and prompts."""
    from vledge.images import preprocess

    image = subject.embed_pixels(preprocess(probe_images, subject.preprocess))
    text = subject.embed_texts(texts)
    reference = Path(job["reference"])
    if job.get("save_reference"):
        np.savez(reference, image=image, text=text)
        return {"image": 1.0, "text": 1.0}
    if not reference.is_file():
        return {"note": "no teacher embeddings (the teacher row failed or was not run)"}
    ref = np.load(reference)
    if ref["image"].shape != image.shape or ref["text"].shape != text.shape:
        return {"note": f"embedding size {image.shape[1]} differs from the teacher's {ref['image'].shape[1]}"}
    return {"image": float((ref["image"] * image).sum(1).mean()), "text": float((ref["text"] * text).sum(1).mean())}


def _accuracy(subject, job: dict) -> dict:
    from vledge.data import load_dataset
    from vledge.evaluate import evaluate

    data = load_dataset(job["data"], job["split"], job.get("data_dir"))
    report = evaluate(subject, data, max_samples=job.get("max_samples"), batch_size=job.get("batch_size", 256))
    return report.to_dict()


def _open(job: dict):
    """The row's model and, for a bundle or checkpoint, its ``EdgeModel`` (None for a peer)."""
    if job.get("opener") == "peer":
        from vledge.bench.peer_model import PeerModel

        return PeerModel(job["path"], job["threads"]), None
    import vledge

    edge = vledge.load(job["path"], backend=job.get("backend"), threads=job["threads"], **job.get("options", {}))
    return EdgeSubject(edge), edge


def measure_row(job: dict) -> dict:
    """Everything the benchmark measures at run time for one row (see the module docstring)."""
    reps = Repetitions(**job["reps"])
    notes: list[str] = []
    load_avg_start = os.getloadavg()
    start_mb = peak_rss_mb()
    t = time.perf_counter()
    subject, edge = _open(job)
    load_s = time.perf_counter() - t
    probe_images = _read_probe(job["probe"])
    from vledge.images import preprocess

    pixels = preprocess(probe_images[:max(BATCHES)], subject.preprocess)
    texts = job["texts"]
    latency, feeds, background = _latency(subject, pixels, texts, reps, notes)
    overhead = {} if edge is None else _overhead(edge, probe_images[0], job["classes"], feeds, reps)
    timing_only = job.get("timing_only", False)  # a repeat of a row: its accuracy and curves are known already
    curves = None
    if job.get("curve_batches") and not timing_only:
        curve_pixels = preprocess(probe_images[:max(job["curve_batches"])], subject.preprocess)
        curves = _curves(subject, curve_pixels, texts, job["curve_batches"], Repetitions(**job["curve_reps"]), notes)
    runtime_peak = peak_rss_mb()
    accuracy = {} if timing_only else _accuracy(subject, job)
    cosine = {} if timing_only else _cosine(subject, probe_images, texts, job)
    info = subject.info()
    if info.get("recipe"):
        notes.append(f"made with {info['recipe']}")
    return {
        "name": job["name"],
        "load_s": load_s,
        "latency": latency,
        "background_cores": background,
        "text_seq_len": int(feeds["text_b1"][next(iter(feeds["text_b1"]))].shape[1]) if "text_b1" in feeds else None,
        "overhead": overhead,
        "curves": curves,
        "memory": {"start_mb": start_mb, "runtime_peak_mb": runtime_peak, "total_peak_mb": peak_rss_mb()},
        "accuracy": accuracy,
        "cosine": cosine,
        "placement": info.get("placement"),
        "precision": info.get("precision"),
        "inference_precision": info.get("inference_precision"),
        "load_average": {"start": load_avg_start, "end": os.getloadavg()},
        "notes": notes,
    }


def _read_probe(path: str) -> list[np.ndarray]:
    probe = np.load(path)
    return [probe[k] for k in sorted(probe.files, key=lambda k: int(k.split("_")[1]))]


def measure_baseline(backend: str, probe: str, empty_onnx: str | None = None) -> dict:
    """Peak memory of what every row holds before its bundle's own files: Python, numpy, Pillow,
    ``tokenizers`` and ``vledge.runtimes``, the probe images, plus ``backend`` with a session on a
    one-node graph (``empty_onnx``, written by the parent so that this process never imports ``onnx``)."""
    import tokenizers  # noqa: F401  every bundle's text side needs it

    import vledge.runtimes  # noqa: F401

    start = peak_rss_mb()
    probe_images = _read_probe(probe)
    if backend == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(empty_onnx, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros(1, np.float32)})
    elif backend == "openvino":
        import openvino as ov
        import openvino.opset13 as ops

        x = ops.parameter([1], np.float32, name="x")
        compiled = ov.Core().compile_model(ov.Model([ops.relu(x)], [x], "empty"), "CPU")
        compiled({"x": np.zeros(1, np.float32)})
    elif backend == "torch":
        import torch

        import vledge.runtimes.torch_backend  # noqa: F401
        from vledge.models import DualEncoder  # noqa: F401  the model code a checkpoint row imports

        torch.nn.Linear(1, 1)(torch.zeros(1, 1))
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return {"backend": backend, "start_mb": start, "baseline_mb": peak_rss_mb(), "probe_images": len(probe_images)}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline"]:  # --baseline BACKEND RESULT PROBE [EMPTY.onnx]
        result, out = measure_baseline(argv[1], *argv[3:]), Path(argv[2])
    else:
        job_path, out = Path(argv[0]), Path(argv[1])
        result = measure_row(json.loads(job_path.read_text()))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
