"""What the benchmark measures, as small functions with no framework imports: timing, latency
statistics, peak memory, sizes, and MACs / parameters counted from an ONNX graph."""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vledge.errors import ConfigError


@dataclass(frozen=True)
class Repetitions:
    """How long each timed call is repeated: warm-up first, then rounds until both minimums are met
    (``min_rounds`` and ``min_seconds``) or either maximum is reached."""

    warmup: int = 5
    min_rounds: int = 30
    min_seconds: float = 1.0
    max_rounds: int = 5000
    max_seconds: float = 6.0

    def __post_init__(self):
        if self.warmup < 0 or self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ConfigError(f"invalid repetitions {self}: need warmup >= 0 and 1 <= min_rounds <= max_rounds")
        if self.min_seconds < 0 or self.max_seconds < self.min_seconds:
            raise ConfigError(f"invalid repetitions {self}: need 0 <= min_seconds <= max_seconds")

    def to_dict(self) -> dict:
        return asdict(self)


QUICK = Repetitions(warmup=2, min_rounds=5, min_seconds=0.0, max_rounds=20, max_seconds=1.0)
# The batch-size curves: each point is a median, and a curve has many points, so fewer repetitions.
CURVE_BATCHES = (1, 2, 4, 8, 16, 32)
CURVE_REPS = Repetitions(warmup=3, min_rounds=10, min_seconds=0.5, max_rounds=100, max_seconds=3.0)


def time_interleaved(calls: Sequence[Callable[[], object]], reps: Repetitions = Repetitions()) -> list[list[float]]:
    """Seconds per call of each of ``calls``, run round-robin so background load hits them alike."""
    for call in calls:
        for _ in range(reps.warmup):
            call()
    times: list[list[float]] = [[] for _ in calls]
    start = time.perf_counter()
    rounds = 0
    while True:
        for call, out in zip(calls, times):
            t = time.perf_counter()
            call()
            out.append(time.perf_counter() - t)
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= reps.max_rounds or elapsed >= reps.max_seconds:
            break
        if rounds >= reps.min_rounds and elapsed >= reps.min_seconds:
            break
    return times


class BackgroundMeter:
    """CPU cores used by *other* processes while a measurement ran: the machine's busy time (Linux
    ``/proc/stat``) minus this process's own CPU time, over the wall time. A benchmark that shares
    its cores reads slow, PyTorch's thread pool most of all (one busy neighbour on 2 cores made a
    2-thread BERT tower 2.4x slower here); this says when a number was taken under such load.
    None where ``/proc/stat`` is missing."""

    def __enter__(self) -> "BackgroundMeter":
        self.cores = None
        self._start = (_machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        machine, own, wall = _machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        if machine is not None and self._start[0] is not None and wall > self._start[2]:
            others = (machine - self._start[0]) - (own - self._start[1])
            self.cores = max(0.0, others / (wall - self._start[2]))


def _machine_busy_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def latency_stats(seconds: Sequence[float], batch: int = 1) -> dict:
    """p50 / p95 / mean / min in milliseconds, the sample count, and items per second at ``batch``.

    Throughput uses the mean (total items over total time), not the median: it is what a stream sees.
    """
    x = np.asarray(seconds, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all() or (x < 0).any():
        raise ConfigError(f"latency_stats needs a non-empty list of non-negative timings, got {list(seconds)[:5]}")
    mean = float(x.mean())
    return {
        "p50_ms": float(np.percentile(x, 50)) * 1e3,
        "p95_ms": float(np.percentile(x, 95)) * 1e3,
        "mean_ms": mean * 1e3,
        "min_ms": float(x.min()) * 1e3,
        "n": int(x.size),
        "items_per_s": batch / mean if mean > 0 else math.inf,
    }


def combine_processes(results: list[dict]) -> tuple[dict, dict, dict]:
    """One row timed in several processes: the median of each latency statistic and each overhead
    figure across them, and each cell's spread of p50 ((max - min) / median).

    Why: the same file timed in two fresh processes on this 2-vCPU machine differed by up to 50%
    at sub-millisecond latencies, with no other load; a median over processes steadies the ratios.
    """
    cells = set.intersection(*(set(r.get("latency", {})) for r in results)) if results else set()
    latency, spread = {}, {}
    for cell in sorted(cells):
        stats = [r["latency"][cell] for r in results]
        latency[cell] = {k: float(np.median([s[k] for s in stats])) for k in ("p50_ms", "p95_ms", "mean_ms", "min_ms",
                                                                           "items_per_s")}
        latency[cell]["n"] = int(sum(s["n"] for s in stats))
        p50 = [s["p50_ms"] for s in stats]
        spread[cell] = (max(p50) - min(p50)) / latency[cell]["p50_ms"]
    keys = set.intersection(*(set(r.get("overhead", {})) for r in results)) if results else set()
    overhead = {k: float(np.median([r["overhead"][k] for r in results])) for k in sorted(keys)}
    return latency, overhead, spread


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (10^6 bytes).

    On Linux this is ``VmHWM``, which starts afresh at ``exec``; ``ru_maxrss`` would not do for a
    worker process: it keeps the peak of the parent it was forked from.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB elsewhere


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of every file under ``path`` (hidden files and folders such as ``.trt_cache`` not counted)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    total = 0
    for file in root.rglob("*"):
        rel = file.relative_to(root).parts
        if file.is_file() and not any(part.startswith(".") for part in rel):
            total += file.stat().st_size
    return total


# op type -> (index of the A / data input, index of the weight input or None)
MAC_OPS = {
    "Conv": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "MatMul": (0, None),
    "MatMulInteger": (0, None),
    "QLinearMatMul": (0, None),
    "Gemm": (0, None),
    "FusedMatMul": (0, None),
}


def _graph_shapes(model, feeds: dict[str, np.ndarray]) -> dict[str, tuple]:
    """The shape of every value in ``model`` on ``feeds``, found by running it in ONNX Runtime with
    every intermediate exposed as an output: exact where static shape inference gives up (the
    reshapes of attention)."""
    import onnx
    import onnxruntime as ort

    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    seen = {o.name for o in graph.graph.output}
    for node in graph.graph.node:
        for name in node.output:
            if name and name not in seen:
                graph.graph.output.append(onnx.ValueInfoProto(name=name))
                seen.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {n: tuple(np.shape(v)) for n, v in zip(names, session.run(names, feeds))}
    shapes.update({init.name: tuple(init.dims) for init in graph.graph.initializer})
    shapes.update({k: tuple(v.shape) for k, v in feeds.items()})
    return shapes


def count_macs(onnx_path: str | os.PathLike, feeds: dict[str, np.ndarray]) -> int:
    """Multiply-accumulates of the convolutions and matrix products of an ONNX graph on ``feeds``.

    Conv: output elements x (input channels per group x kernel area); MatMul / Gemm: output elements
    x the shared dimension. Quantized forms (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger)
    count like their float ops; element-wise ops, normalisation and softmax are not counted.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    shapes = _graph_shapes(model, feeds)
    total = 0
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        data_index, weight_index = MAC_OPS[node.op_type]
        out = shapes[node.output[0]]
        if weight_index is not None:  # convolution
            total += math.prod(out) * math.prod(shapes[node.input[weight_index]][1:])
            continue
        a = shapes[node.input[data_index]]
        trans_a = any(att.name == "transA" and att.i for att in node.attribute)
        shared = a[-2] if trans_a else a[-1]
        total += math.prod(out) * shared
    return int(total)


# Inputs that take a quantization scale or zero point, by op type (ONNX's and ONNX Runtime's contrib ops).
_QUANT_PARAM_INPUTS = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearAdd": (1, 2, 4, 5, 6, 7), "QLinearMul": (1, 2, 4, 5, 6, 7), "QGemm": (1, 2, 4, 5, 7, 8),
    "QLinearGlobalAveragePool": (1, 2, 3, 4), "QLinearSigmoid": (1, 2, 3, 4), "QLinearLeakyRelu": (1, 2, 3, 4),
    "MatMulInteger": (2, 3), "ConvInteger": (2, 3),
    "MatMulIntegerToFloat": (2, 3, 4, 5), "DynamicQuantizeMatMul": (2, 3),
}


def _quantization_parameters(graph) -> set[str]:
    """Names of the values a graph uses as quantization scales and zero points, found by where they are
    used (a shipped graph's names say nothing: vledge compacts them). Dynamic INT8 multiplies a weight's
    scale into the activation's, which ``DynamicQuantizeLinear`` outputs second."""
    activation_scales = {n.output[1] for n in graph.node if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    found = set()
    for node in graph.node:
        found.update(node.input[i] for i in _QUANT_PARAM_INPUTS.get(node.op_type, ()) if i < len(node.input))
        if node.op_type == "Mul" and activation_scales & set(node.input):
            found.update(node.input)
    return found


def count_onnx_parameters(onnx_path: str | os.PathLike) -> int:
    """Elements of an ONNX graph's float, 8-bit and int32 initializers, quantization scales and zero
    points excluded: the parameter count when no PyTorch model is at hand."""
    import onnx
    from onnx import TensorProto

    kinds = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8, TensorProto.UINT8,
             TensorProto.INT32}  # INT32: the biases of quantized convolutions
    graph = onnx.load(str(onnx_path)).graph
    excluded = _quantization_parameters(graph)
    return int(sum(
        math.prod(init.dims) for init in graph.initializer if init.data_type in kinds and init.name not in excluded
    ))
