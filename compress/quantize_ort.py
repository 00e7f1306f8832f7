"""ONNX Runtime INT8 schemes through Optimum's ``ORTQuantizer``: ``ort-cpu`` and ``ort-tensorrt``.

Calibration uses Optimum's ``CalibrationConfig.create_calibrator`` fed by our own
``CalibrationDataReader``: Optimum's ``fit`` wraps every sample in a list, which cannot carry padded
text batches, and padded batches are what the text tower sees at run time.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import tempfile
from pathlib import Path

from vledge.compress.quantize import (
    QUANTIZERS, QuantizeConfig, check_keep_fp32, count_ops, onnx_tower_spec, output_path, require_calibration,
)
from vledge.errors import ExportError

log = logging.getLogger(__name__)

# The ort-cpu format chosen per tower kind when QuantizeConfig.ort_cpu_format says "auto", with the
# measurement behind it (benchmarks/quantize_formats.py, 2 threads, this project's STACK.md CPU).
ORT_CPU_DEFAULT = {
    "image": ("static", "static QOperator U8S8 measured fastest on image towers with cosine >= 0.99 to FP32"),
    "text": ("dynamic", "dynamic INT8 measured faster than static on text towers and needs no calibration"),
}
# Op types per (format, kind) when QuantizeConfig gives none for the image tower (text: MatMul).
DEFAULT_IMAGE_OPS = {
    "static": ["Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool", "Relu", "MaxPool"],
    "dynamic": ["Conv", "MatMul"],
    "tensorrt": ["Conv", "MatMul", "Gemm"],
}
QUANTIZED_OPS = (
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
)


def host_cpu_preset() -> str:
    """Optimum's CPU preset for this machine: arm64, avx512_vnni (any VNNI: U8S8 is safe), else avx2."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    return "avx512_vnni" if {"avx512_vnni", "avx_vnni"} & set(flags) else "avx2"


@QUANTIZERS.register("ort-cpu")
def quantize_ort_cpu(onnx_path: Path, kind: str, calibration, out_dir: Path, config: QuantizeConfig):
    """INT8 for ONNX Runtime CPU: static QOperator or dynamic, per tower kind (see ``ORT_CPU_DEFAULT``)."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fmt, reason = ORT_CPU_DEFAULT[kind]
    if config.ort_cpu_format[kind] != "auto":
        fmt, reason = config.ort_cpu_format[kind], f"set by QuantizeConfig.ort_cpu_format[{kind!r}]"
    static = fmt == "static"
    preset = host_cpu_preset() if config.cpu_preset == "auto" else config.cpu_preset
    ops = config.op_types(kind) or DEFAULT_IMAGE_OPS[fmt]
    qconfig = getattr(AutoQuantizationConfig, preset)(
        is_static=static, per_channel=config.per_channel,
        nodes_to_exclude=check_keep_fp32(onnx_path, kind, config), operators_to_quantize=list(ops),
    )
    details = {"method": fmt, "preset": preset, "reason": reason}
    ranges = None
    out = output_path(out_dir, kind, ".onnx")
    with _prepared(onnx_path) as prepared:
        if static:
            # QOperator, not Optimum's static default QDQ: on ORT CPU, QDQ ran slower than FP32.
            qconfig.format, qconfig.mode = QuantFormat.QOperator, QuantizationMode.QLinearOps
            ranges, details["calibration"] = _calibrate(prepared, kind, calibration, ops, config, "ort-cpu", symmetric=False)
        _quantize(prepared, qconfig, ranges, out)
    return onnx_tower_spec(out, "int8", {**_describe(qconfig, "ort-cpu", config), **details, "quantized_nodes": _quantized_counts(out)})


@QUANTIZERS.register("ort-tensorrt")
def quantize_ort_tensorrt(onnx_path: Path, kind: str, calibration, out_dir: Path, config: QuantizeConfig):
    """Static INT8 for TensorRT: symmetric activations and weights, per-channel, QDQ (Optimum's preset).

    The graph also runs on ONNX Runtime CPU (the end of the jetson fallback chain), slowly.
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    ops = config.op_types(kind) or DEFAULT_IMAGE_OPS["tensorrt"]
    qconfig = AutoQuantizationConfig.tensorrt(
        per_channel=config.per_channel, nodes_to_exclude=check_keep_fp32(onnx_path, kind, config), operators_to_quantize=list(ops),
    )
    out = output_path(out_dir, kind, ".onnx")
    with _prepared(onnx_path) as prepared:
        ranges, calib = _calibrate(prepared, kind, calibration, ops, config, "ort-tensorrt", symmetric=True)
        _quantize(prepared, qconfig, ranges, out)
    details = {"method": "static", "preset": "tensorrt", "calibration": calib,
               "reason": "TensorRT builds INT8 engines from symmetric per-channel QDQ graphs"}
    return onnx_tower_spec(out, "int8", {**_describe(qconfig, "ort-tensorrt", config), **details, "quantized_nodes": _quantized_counts(out)})


@contextlib.contextmanager
def _prepared(onnx_path: Path):
    """ONNX Runtime's recommended pre-processing (shape inference, basic graph optimisation) in a scratch
    folder. It also removes the Identity nodes the TorchScript exporter puts between a Conv and its
    bias, which the static quantizer cannot follow.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="vledge-quant-") as tmp:
        prepared = Path(tmp) / onnx_path.name
        try:
            # ONNX's own shape inference suffices; the symbolic one fails on the text towers' mask
            # arithmetic and then leaves a temporary model in the working directory.
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # shape inference raises many unrelated types
            raise ExportError(f"pre-processing {onnx_path.name} for quantization failed: {type(exc).__name__}: {exc}") from exc
        yield prepared


def _calibrate(onnx_path: Path, kind: str, calibration, ops, config: QuantizeConfig, scheme: str, symmetric: bool):
    """Activation ranges from MinMax calibration over the tower's calibration batches."""
    from onnxruntime.quantization import CalibrationMethod
    from optimum.onnxruntime.configuration import CalibrationConfig

    calibration = require_calibration(calibration, kind, scheme)
    batch, seq = static_input_shape(onnx_path, kind)
    reader = calibration.data_reader(kind, batch or config.calibration_batch, seq)
    calib = CalibrationConfig(
        dataset_name=calibration.source or "vledge", dataset_config_name=kind, dataset_split="calibration",
        dataset_num_samples=len(calibration.samples(kind)), method=CalibrationMethod.MinMax,
    )
    with tempfile.TemporaryDirectory(prefix="vledge-calib-") as tmp:
        calibrator = calib.create_calibrator(
            onnx_model_path=onnx_path.as_posix(), operators_to_quantize=list(ops),
            augmented_model_name=str(Path(tmp) / "augmented.onnx"), force_symmetric_range=symmetric,
        )
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    return ranges, {"method": "minmax", "samples": len(calibration.samples(kind)), "batches": len(reader),
                    "symmetric": symmetric, "source": calibration.source}


def _quantize(onnx_path: Path, qconfig, ranges, out: Path) -> Path:
    """Run Optimum's quantizer in a scratch folder (it writes configs beside the model), keep the model."""
    from optimum.onnxruntime import ORTQuantizer
    from transformers import PretrainedConfig

    with tempfile.TemporaryDirectory(prefix="vledge-quant-") as tmp:
        # A blank config stops Optimum looking for a Hugging Face config.json beside the tower.
        quantizer = ORTQuantizer(onnx_path, config=PretrainedConfig())
        try:
            folder = quantizer.quantize(qconfig, tmp, file_suffix="quantized", calibration_tensors_range=ranges)
        except Exception as exc:  # ORT's quantizer raises many unrelated types
            raise ExportError(f"quantizing {onnx_path.name} failed: {type(exc).__name__}: {exc}") from exc
        shutil.move(str(Path(folder) / f"{onnx_path.stem}_quantized.onnx"), out)
    return out


def static_input_shape(onnx_path: Path, kind: str) -> tuple[int | None, int | None]:
    """(batch, sequence) when the graph's first input has fixed sizes, else None for each."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return fixed[0], (fixed[1] if kind == "text" else None)


def _describe(qconfig, scheme: str, config: QuantizeConfig) -> dict:
    return {
        "scheme": scheme,
        "format": qconfig.format.name,
        "activations": f"{qconfig.activations_dtype.name} {'symmetric' if qconfig.activations_symmetric else 'asymmetric'}",
        "weights": f"{qconfig.weights_dtype.name} {'symmetric' if qconfig.weights_symmetric else 'asymmetric'}"
                   f"{' per-channel' if qconfig.per_channel else ' per-tensor'}",
        "op_types": [getattr(op, "value", op) for op in qconfig.operators_to_quantize],
        "keep_fp32": list(config.keep_fp32),
    }


def _quantized_counts(path: Path) -> dict[str, int]:
    return {op: n for op, n in count_ops(path).items() if op in QUANTIZED_OPS}
