"""One benchmark row, measured in a process of its own so that memory peaks of rows never mix.

``python -m vledge.bench.worker JOB.json RESULT.json`` loads one model through ``vledge.load`` and
measures, in this order (peak memory only grows, so the runtime's peak is read before evaluation
loads the data set): tower latency at batch 1 and 8, the Python-side share of batch-1 ``classify``,
peak memory; then zero-shot accuracy and embedding cosine to the teacher.

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


def _feeds(edge, kind: str, batch: int, pixels: np.ndarray, texts: list[str]) -> dict[str, np.ndarray]:
    """The tower's input arrays at ``batch``, dtypes as the bundle declares them."""
    if kind == "image":
        arrays = [pixels[:batch]]
    else:
        static_seq = any(isinstance(s[-1], int) for s in edge.runtime.input_shapes("text").values())
        arrays = list(edge.tokenizer(texts[:batch], pad_to_max=static_seq))
    specs = edge.manifest.towers[kind].inputs
    return {spec.name: a.astype(spec.dtype, copy=False) for spec, a in zip(specs, arrays)}


def _latency(edge, pixels, texts, reps: Repetitions, notes: list[str]) -> tuple[dict, dict, float | None]:
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
                    feed = _feeds(edge, kind, batch, pixels, texts)
                    edge.runtime.run(kind, feed)
                except Exception as exc:  # a static-shape bundle cannot take every batch: note it, go on
                    notes.append(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                (times,) = time_interleaved([lambda kind=kind, feed=feed: edge.runtime.run(kind, feed)], reps)
                stats[key], feeds[key] = latency_stats(times, batch), feed
    return stats, feeds, background.cores


def _overhead(edge, frame: np.ndarray, classes: list[str], feeds: dict, reps: Repetitions) -> dict:
    """Python-side work as a share of batch-1 end-to-end latency, from interleaved medians.

    ``classify(frame, classes)`` (label embeddings cached after the first call, as on a device that
    classifies a stream) against the bare image-tower call on the same preprocessed frame; and
    ``encode_text(prompt)`` against the bare text-tower call.
    """
    from vledge.images import preprocess

    out = {}
    if "image_b1" in feeds:
        edge.classify(frame, classes, top_k=5)
        spec = edge.manifest.preprocess
        feed = feeds["image_b1"]
        e2e, tower, prep = time_interleaved([
            lambda: edge.classify(frame, classes, top_k=5),
            lambda: edge.runtime.run("image", feed),
            lambda: preprocess(frame, spec),
        ], reps)
        e2e_ms, tower_ms = latency_stats(e2e)["p50_ms"], latency_stats(tower)["p50_ms"]
        out["classify_b1_p50_ms"] = e2e_ms
        out["image_tower_b1_p50_ms"] = tower_ms
        out["preprocess_p50_ms"] = latency_stats(prep)["p50_ms"]
        out["classify_share"] = max(0.0, 1 - tower_ms / e2e_ms)
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


def _cosine(edge, probe_images: list, texts: list[str], job: dict) -> dict:
    """Mean cosine of this row's embeddings to the teacher's on the probe images and prompts."""
    from vledge.images import preprocess

    image = edge.encode_pixels(preprocess(probe_images, edge.manifest.preprocess))
    text = edge.encode_text(texts)
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


def _accuracy(edge, job: dict) -> dict:
    from vledge.data import load_dataset
    from vledge.evaluate import RuntimeEmbedder, evaluate

    data = load_dataset(job["data"], job["split"], job.get("data_dir"))
    report = evaluate(RuntimeEmbedder(edge), data, max_samples=job.get("max_samples"), batch_size=job.get("batch_size", 256))
    return report.to_dict()


def measure_row(job: dict) -> dict:
    """Everything the benchmark measures at run time for one row (see the module docstring)."""
    import vledge

    reps = Repetitions(**job["reps"])
    notes: list[str] = []
    load_avg_start = os.getloadavg()
    start_mb = peak_rss_mb()
    t = time.perf_counter()
    edge = vledge.load(job["path"], backend=job.get("backend"), threads=job["threads"], **job.get("options", {}))
    load_s = time.perf_counter() - t
    probe_images = _read_probe(job["probe"])
    from vledge.images import preprocess

    pixels = preprocess(probe_images[:max(BATCHES)], edge.manifest.preprocess)
    texts = job["texts"]
    latency, feeds, background = _latency(edge, pixels, texts, reps, notes)
    overhead = _overhead(edge, probe_images[0], job["classes"], feeds, reps)
    runtime_peak = peak_rss_mb()
    timing_only = job.get("timing_only", False)  # a repeat of a row: its accuracy is known already
    accuracy = {} if timing_only else _accuracy(edge, job)
    cosine = {} if timing_only else _cosine(edge, probe_images, texts, job)
    info = edge.info()
    return {
        "name": job["name"],
        "load_s": load_s,
        "latency": latency,
        "background_cores": background,
        "text_seq_len": int(feeds["text_b1"][next(iter(feeds["text_b1"]))].shape[1]) if "text_b1" in feeds else None,
        "overhead": overhead,
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
