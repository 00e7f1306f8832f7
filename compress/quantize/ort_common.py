"""What the ONNX Runtime INT8 schemes (``ort_cpu``, ``ort_tensorrt``) share, through Optimum's ``ORTQuantizer``.

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
from dataclasses import dataclass
from pathlib import Path

from vledge.compress.quantize.base import SchemeConfig, check_bool, check_names, check_positive
from vledge.compress.quantize.tools import (
    count_ops, has_attention, onnx_tower_spec, ort_runner, output_path, record_cosine, require_calibration,
    static_input_shape,
)
from vledge.cpu import VNNI
from vledge.errors import ExportError

log = logging.getLogger(__name__)

# Image-tower op types when a config gives none. Conv towers also quantize Add/Mul/pooling, so
# residual chains stay INT8 (resnet18: 0.9905 cosine and fastest); towers with attention keep the
# weight ops only, as text towers do: quantizing their Add/Mul took a tiny ViT from 0.999 to 0.97.
CONV_STATIC_OPS = ["Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool", "Relu", "MaxPool"]
WEIGHT_OPS = ["Conv", "MatMul", "Gemm"]
QUANTIZED_OPS = (
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
)


@dataclass
class OrtConfig(SchemeConfig):
    """Settings of both ONNX Runtime schemes (on top of ``SchemeConfig``'s).

    - ``calibration_batch``: batch size of the calibration feeds (static-shape towers use their own).
    - ``per_channel``: per-output-channel weight scales.
    - ``image_op_types``: ONNX op types quantized in image towers (None: the scheme's default).
    - ``text_op_types``: the same for text towers (None: the scheme's default). Static INT8 over every
      op type wrecked text towers (cosine 0.2-0.3 to FP32) and MatMul alone kept 0.9995.
    """

    calibration_batch: int = 8
    per_channel: bool = True
    image_op_types: list[str] | None = None
    text_op_types: list[str] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "calibration_batch")
        check_bool(self, "per_channel")
        self.image_op_types = check_names(self, "image_op_types", self.image_op_types, nullable=True)
        self.text_op_types = check_names(self, "text_op_types", self.text_op_types, nullable=True)

    def op_types(self, kind: str) -> list[str] | None:
        return self.image_op_types if kind == "image" else self.text_op_types


def run_quantizer(onnx_path, kind, calibration, out_dir, config: OrtConfig, qconfig, details, calibrate: bool,
                  weight_bits: int, float_qdq: bool = False):
    """Pre-process, calibrate (static only), quantize, then check the result against FP32.

    ``weight_bits`` 8 also writes a 7-bit copy of the tower, the fallback of CPUs without VNNI (same
    calibration). ``float_qdq`` checks the result with its integer ops run in float, as exactly as
    TensorRT computes them, on any CPU.
    """
    scheme = config.scheme
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


def _calibrate(onnx_path: Path, kind: str, calibration, ops, config: OrtConfig, symmetric: bool):
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


def _describe(qconfig, scheme: str, config: OrtConfig) -> dict:
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
