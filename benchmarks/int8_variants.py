"""Timing only: INT8 variants of a camera student's FP32 image tower on ONNX Runtime at batch 8, 2 threads, against
its FP32 graph: the static QOperator op set ``vledge compress --target cpu`` uses (Conv/MatMul/Gemm), the same
with the bias and residual Adds (and more ops) quantized, and dynamic INT8. Calibration and probe inputs are
random (the cosines only flag a broken variant). Run on a quiet machine, from the repository root:
    .venv/bin/python benchmarks/int8_variants.py WORK/clip-vit-b32-camera-vit-shrink-fp32/image_encoder.onnx
(the FP32 export ``benchmarks/camera.py`` leaves in its work folder); prints one line per variant.
"""

import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from vledge.bench.measure import Repetitions, time_interleaved

BATCH, THREADS, ROUNDS = 8, 2, 15
VARIANTS = {  # label -> (static?, op types quantized)
    "static Conv/MatMul/Gemm (vledge)": (True, ["Conv", "MatMul", "Gemm"]),
    "static + Add": (True, ["Conv", "MatMul", "Gemm", "Add"]),
    "static + Add, Mul, Sigmoid, Softmax": (True, ["Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Softmax"]),
    "dynamic MatMul (Conv in FP32)": (False, ["MatMul"]),
    "dynamic MatMul and Conv": (False, ["MatMul", "Conv"]),
}


class RandomBatches(CalibrationDataReader):
    def __init__(self, name: str, rng):
        self.items = iter([{name: rng.standard_normal((BATCH, 3, 224, 224)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.items, None)


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as vledge's runtime opens them
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    name = ort.InferenceSession(str(src)).get_inputs()[0].name
    paths = {"fp32": src}
    for i, (label, (static, ops)) in enumerate(VARIANTS.items()):
        paths[label] = out / f"variant-{i}.onnx"
        if static:
            quantize_static(str(src), str(paths[label]), RandomBatches(name, rng), quant_format=QuantFormat.QOperator,
                            op_types_to_quantize=ops, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        else:
            quantize_dynamic(str(src), str(paths[label]), op_types_to_quantize=ops, per_channel=True,
                             reduce_range=True, weight_type=QuantType.QInt8)
    x = rng.standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    sessions = {label: session(path) for label, path in paths.items()}
    outputs = {label: s.run(None, {name: x})[0] for label, s in sessions.items()}  # also the warm-up
    # Interleaved, so a load change touches every variant alike.
    reps = Repetitions(warmup=0, min_rounds=ROUNDS, min_seconds=0, max_rounds=ROUNDS, max_seconds=1e9)
    times = dict(zip(sessions, time_interleaved([lambda s=s: s.run(None, {name: x}) for s in sessions.values()], reps)))
    fp32, ref = statistics.median(times["fp32"]), outputs["fp32"]
    for label, y in outputs.items():
        cosine = np.min((y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1))
        ms = statistics.median(times[label])
        print(f"{label:38s} batch {BATCH} {ms * 1e3:7.2f} ms  {fp32 / ms:.2f}x  worst cosine {cosine:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/int8-variants"))
