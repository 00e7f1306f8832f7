"""Timing only: batch-1 tower times of tiny towers on ONNX Runtime, interleaved in one process, against the
same graphs with every input dimension fixed (batch 1, and the prompt's length for text), which lets ONNX
Runtime fold all shape arithmetic: the least a graph of those operators can take at batch 1 on this machine.

Give the tower kind and ``label=model.onnx`` pairs (a bundle's tower, an FP32 export, a peer's export);
``--static LABEL`` adds a fixed-shape copy of that one. Inputs are random (image: (1, 3, SIZE, SIZE); text:
ids of ``--tokens`` tokens, mask all ones). One intra-op thread, no spinning, as vledge opens tiny towers.
    .venv/bin/python benchmarks/batch1_floor.py text peer=PEER/text.onnx bundle=B/text_encoder.onnx \
        fp32=WORK/export/text_encoder.onnx --static fp32 --static bundle
Prints the median milliseconds per label.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from vledge.bench.measure import Repetitions, time_interleaved

REPS = Repetitions(warmup=100, min_rounds=100, min_seconds=12, max_rounds=1_000_000, max_seconds=12)


def fixed_shape_copy(path: str, kind: str, size: int, tokens: int, folder: Path) -> str:
    model = onnx.load(path)
    for tensor in model.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        for dim, value in zip(dims, (1, tokens) if kind == "text" else (1, 3, size, size)):
            dim.ClearField("dim_param")
            dim.dim_value = value
    out = folder / f"{len(list(folder.iterdir()))}-fixed.onnx"
    onnx.save(model, out)
    return str(out)


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, size: int, tokens: int, rng) -> dict:
    out = {}
    for spec in sess.get_inputs():
        if "float" in spec.type:
            out[spec.name] = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        elif "mask" in spec.name:
            out[spec.name] = np.ones((1, tokens), np.int64)
        else:
            out[spec.name] = rng.integers(1, 100, (1, tokens)).astype(np.int64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["image", "text"])
    parser.add_argument("models", nargs="+", help="label=path.onnx")
    parser.add_argument("--static", action="append", default=[], help="a label to add a fixed-shape copy of")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=12)
    args = parser.parse_args()
    paths = dict(pair.split("=", 1) for pair in args.models)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.static:
            copy = fixed_shape_copy(paths[label], args.kind, args.size, args.tokens, Path(tmp))
            paths[f"{label} (fixed shapes)"] = copy
        sessions = {label: session(path) for label, path in paths.items()}
        inputs = {label: feeds(sess, args.size, args.tokens, rng) for label, sess in sessions.items()}
        calls = [lambda s=sess, x=inputs[label]: s.run(None, x) for label, sess in sessions.items()]
        times = dict(zip(sessions, time_interleaved(calls, REPS)))
    for label, values in times.items():
        print(f"{args.kind} {label}: {statistics.median(values) * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
