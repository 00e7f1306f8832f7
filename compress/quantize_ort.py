"""ONNX Runtime INT8 schemes through Optimum's ``ORTQuantizer``: ``ort-cpu`` and ``ort-tensorrt``.

Calibration uses Optimum's ``CalibrationConfig.create_calibrator`` fed by our own
``CalibrationDataReader``: Optimum's ``fit`` wraps every sample in a list, which cannot carry padded
text batches, and padded batches are what the text tower sees at run time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

from vledge.compress.quantize import (
    QUANTIZERS, QuantizeConfig, check_keep_fp32, count_ops, has_attention, onnx_tower_spec, ort_runner,
    output_path, record_cosine, require_calibration, require_onnx, static_input_shape,
)
from vledge.cpu import VNNI, host_cpu
from vledge.errors import ExportError

log = logging.getLogger(__name__)

# The ort-cpu format per tower kind when QuantizeConfig.ort_cpu_format says "auto". Measured on a
# student-size pair (resnet18 at 28 px, BERT 2x256), 2 threads, best of 150 on a shared host, ms at
# batch 1 / 8: image static 1.23 / 2.56, FP32 1.85 / 5.69, dynamic 7.1 / 39 (ConvInteger is slow);
# text dynamic 0.73 / 1.78, static 0.67 / 2.04, FP32 1.25 / 3.53; text cosine to FP32 0.9999+ for both.
ORT_CPU_DEFAULT = {
    "image": ("static", "static QOperator U8S8 measured fastest on image towers; "
                        "dynamic INT8 convolutions ran 4-12x slower than FP32"),
    "text": ("dynamic", "dynamic INT8 measured within 0.1 ms of static on text towers at batch 1 and faster at 8, "
                        "as accurate, and needs no calibration"),
}
# Image-tower op types when QuantizeConfig gives none. Conv towers also quantize Add/Mul/pooling, so
# residual chains stay INT8 (resnet18: 0.9905 cosine and fastest); towers with attention keep the
# weight ops only, as text towers do: quantizing their Add/Mul took a tiny ViT from 0.999 to 0.97.
CONV_STATIC_OPS = ["Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool", "Relu", "MaxPool"]
WEIGHT_OPS = ["Conv", "MatMul", "Gemm"]
# Text towers: products with weights, and the token embedding table (INT8 storage, dequantized after the
# lookup): on a tiny CLIP text tower 162 -> 110 KB at the same cosine to FP32 (0.9995).
TEXT_OPS = ["MatMul", "Gather"]
QUANTIZED_OPS = (
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
)


def default_cpu_preset() -> str:
    """Optimum's CPU preset when ``QuantizeConfig.cpu_preset`` is ``auto``: U8S8 (``avx512_vnni``, or
    ``arm64`` on ARM) whatever the compressing machine has, so a bundle does not depend on where it was
    made. Optimum's ``avx2`` preset is U8U8: on the demo teacher's image tower it ran 2x slower at batch
    8 and still lost accuracy on an AVX2-only CPU (worst cosine 0.943); 7-bit U8S8 weights kept 0.9988.
    """
    return "arm64" if host_cpu().is_arm else "avx512_vnni"


@QUANTIZERS.register("ort-cpu")
def quantize_ort_cpu(onnx_path: Path, kind: str, calibration, out_dir: Path, config: QuantizeConfig):
    """INT8 for ONNX Runtime CPU: static QOperator or dynamic, per tower kind (see ``ORT_CPU_DEFAULT``)."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    require_onnx(onnx_path, "ort-cpu")
    fmt, reason = ORT_CPU_DEFAULT[kind]
    if config.ort_cpu_format[kind] != "auto":
        fmt, reason = config.ort_cpu_format[kind], f"set by QuantizeConfig.ort_cpu_format[{kind!r}]"
    static = fmt == "static"
    preset = default_cpu_preset() if config.cpu_preset == "auto" else config.cpu_preset
    ops = config.op_types(kind) or _default_ops(onnx_path, kind, static)
    exclude = check_keep_fp32(onnx_path, kind, config)
    fp32_products = [] if static else activation_matmuls(onnx_path)
    qconfig = getattr(AutoQuantizationConfig, preset)(
        is_static=static, per_channel=config.per_channel,
        nodes_to_exclude=exclude + [n for n in fp32_products if n not in exclude], operators_to_quantize=list(ops),
    )
    if static:
        # QOperator, not Optimum's static default QDQ: on ORT CPU, QDQ ran 3x slower than FP32.
        qconfig.format, qconfig.mode = QuantFormat.QOperator, QuantizationMode.QLinearOps
    details = {"method": fmt, "preset": preset, "reason": reason}
    if fp32_products:
        details["fp32_activation_matmuls"] = len(fp32_products)
    return _run(onnx_path, kind, calibration, out_dir, config, qconfig, "ort-cpu", details, calibrate=static,
                weight_bits=config.weight_bits)


@QUANTIZERS.register("ort-tensorrt")
def quantize_ort_tensorrt(onnx_path: Path, kind: str, calibration, out_dir: Path, config: QuantizeConfig):
    """Static INT8 for TensorRT: symmetric activations and weights, per-channel, QDQ (Optimum's preset).

    The graph also runs on ONNX Runtime CPU (the end of the jetson fallback chain), about 3x slower
    than FP32 there.
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    require_onnx(onnx_path, "ort-tensorrt")
    # TensorRT's INT8 path is for products; its embedding lookups stay in float.
    ops = config.op_types(kind) or (["MatMul"] if kind == "text" else WEIGHT_OPS)
    qconfig = AutoQuantizationConfig.tensorrt(
        per_channel=config.per_channel, nodes_to_exclude=check_keep_fp32(onnx_path, kind, config),
        operators_to_quantize=list(ops),
    )
    details = {"method": "static", "preset": "tensorrt",
               "reason": "TensorRT builds INT8 engines from symmetric per-channel QDQ graphs"}
    spec = _run(onnx_path, kind, calibration, out_dir, config, qconfig, "ort-tensorrt", details, calibrate=True,
                weight_bits=8, float_qdq=True)
    # TensorRT sums INT8 products exactly; ONNX Runtime CPU, the end of the jetson chain, needs VNNI
    # for that, and without it runs the same graph with its integer ops in float.
    return dataclasses.replace(spec, requires_isa=[VNNI], fallback={
        "float_qdq": True, "reason": "8-bit QDQ graph: integer kernels without VNNI would saturate",
    })


def _run(onnx_path, kind, calibration, out_dir, config, qconfig, scheme, details, calibrate: bool,
         weight_bits: int, float_qdq: bool = False):
    """Pre-process, calibrate (static only), quantize, then check the result against FP32.

    ``weight_bits`` 8 also writes a 7-bit copy of the tower, the fallback of CPUs without VNNI (same
    calibration). ``float_qdq`` checks the result with its integer ops run in float, as exactly as
    TensorRT computes them, on any CPU.
    """
    if calibrate:
        calibration = require_calibration(calibration, kind, scheme)
    out = output_path(out_dir, kind, ".onnx")
    seven_bit = output_path(out_dir, kind, ".7bit.onnx")
    with _prepared(onnx_path) as prepared:
        ranges = None
        if calibrate:
            symmetric = qconfig.activations_symmetric and qconfig.weights_symmetric
            ops = qconfig.operators_to_quantize
            ranges, details["calibration"] = _calibrate(prepared, kind, calibration, ops, config, symmetric)
        qconfig.reduce_range = weight_bits == 7
        _quantize(prepared, qconfig, ranges, out)
        if weight_bits == 8 and not float_qdq:
            qconfig.reduce_range = True
            _quantize(prepared, qconfig, ranges, seven_bit)
            qconfig.reduce_range = False
    details = {**_describe(qconfig, scheme, config), **details, "weight_bits": weight_bits,
               "quantized_nodes": _quantized_counts(out)}
    fallback = None
    if calibration is not None:
        shape = static_input_shape(onnx_path, kind)
        reference = ort_runner(onnx_path)
        record_cosine(details, reference, ort_runner(out, float_qdq), calibration, kind, scheme, shape)
        if seven_bit.exists():
            fallback = {"weight_bits": 7}
            record_cosine(fallback, reference, ort_runner(seven_bit), calibration, kind, f"{scheme} 7-bit", shape)
    spec = onnx_tower_spec(out, "int8", details)
    if weight_bits == 8 and not float_qdq:
        reason = "7-bit weights: exact on CPUs without VNNI"
        spec = dataclasses.replace(spec, requires_isa=[VNNI],
                                   fallback={"file": seven_bit.name, **(fallback or {}), "reason": reason})
    return spec


def activation_matmuls(onnx_path: Path) -> list[str]:
    """MatMul nodes whose two inputs are both computed (attention's scores and mixing), not weights.

    Dynamic INT8 keeps them FP32, as ONNX Runtime's own ``quantize_dynamic`` does by default: Optimum's
    quantizer would quantize both inputs at run time. On the demo student's text tower that took 17
    MatMulInteger and 17 DynamicQuantizeLinear nodes down to 13 and 9 (the Q, K and V products share
    theirs) and ran 9% faster at batch 8, at the same cosine to FP32.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not constants & set(n.input)]


def _default_ops(onnx_path: Path, kind: str, static: bool) -> list[str]:
    """Op types when QuantizeConfig gives none for this tower kind (see CONV_STATIC_OPS)."""
    if kind == "text":
        return TEXT_OPS
    if not static:
        return ["Conv", "MatMul"]
    return WEIGHT_OPS if has_attention(count_ops(onnx_path)) else CONV_STATIC_OPS


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
            raise ExportError(
                f"pre-processing {onnx_path.name} for quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        yield prepared


def _calibrate(onnx_path: Path, kind: str, calibration, ops, config: QuantizeConfig, symmetric: bool):
    """Activation ranges from MinMax calibration over the tower's calibration batches."""
    from onnxruntime.quantization import CalibrationMethod
    from optimum.onnxruntime.configuration import CalibrationConfig

    batch, seq = static_input_shape(onnx_path, kind)
    reader = calibration.data_reader(kind, batch or config.calibration_batch, seq)
    samples = len(calibration.samples(kind))
    calib = CalibrationConfig(
        dataset_name=calibration.source or "vledge", dataset_config_name=kind, dataset_split="calibration",
        dataset_num_samples=samples, method=CalibrationMethod.MinMax,
    )
    with tempfile.TemporaryDirectory(prefix="vledge-calib-") as tmp:
        calibrator = calib.create_calibrator(
            onnx_model_path=onnx_path.as_posix(), operators_to_quantize=[getattr(op, "value", op) for op in ops],
            augmented_model_name=str(Path(tmp) / "augmented.onnx"), force_symmetric_range=symmetric,
        )
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    return ranges, {"method": "minmax", "samples": samples, "batches": len(reader), "symmetric": symmetric,
                    "source": calibration.source}


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


def _describe(qconfig, scheme: str, config: QuantizeConfig) -> dict:
    return {
        "scheme": scheme,
        "format": qconfig.format.name,
        "activations": f"{qconfig.activations_dtype.name} {_symmetry(qconfig.activations_symmetric)}",
        "weights": f"{qconfig.weights_dtype.name} {_symmetry(qconfig.weights_symmetric)}"
                   f"{' per-channel' if qconfig.per_channel else ' per-tensor'}",
        "op_types": [getattr(op, "value", op) for op in qconfig.operators_to_quantize],
        "keep_fp32": list(config.keep_fp32),
    }


def _symmetry(symmetric: bool) -> str:
    return "symmetric" if symmetric else "asymmetric"


def _quantized_counts(path: Path) -> dict[str, int]:
    return {op: n for op, n in count_ops(path).items() if op in QUANTIZED_OPS}
