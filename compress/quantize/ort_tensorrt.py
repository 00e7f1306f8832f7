"""The ``ort-tensorrt`` scheme: static symmetric per-channel INT8 QDQ, what TensorRT builds engines from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vledge.compress.quantize.base import register
from vledge.compress.quantize.ort_common import WEIGHT_OPS, OrtConfig, run_quantizer
from vledge.compress.quantize.tools import check_keep_fp32, require_onnx
from vledge.cpu import VNNI


@dataclass
class OrtTensorRTConfig(OrtConfig):
    """``ort-tensorrt`` settings: ``OrtConfig``'s. Weights are always 8-bit (TensorRT sums exactly)."""

    scheme = "ort-tensorrt"


@register(OrtTensorRTConfig)
def quantize_ort_tensorrt(onnx_path: Path, kind: str, calibration, out_dir: Path, config: OrtTensorRTConfig):
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
    spec = run_quantizer(onnx_path, kind, calibration, out_dir, config, qconfig, details, calibrate=True,
                         weight_bits=8, float_qdq=True)
    # TensorRT sums INT8 products exactly; ONNX Runtime CPU, the end of the jetson chain, needs VNNI
    # for that, and without it runs the same graph with its integer ops in float.
    return dataclasses.replace(spec, requires_isa=[VNNI], fallback={
        "float_qdq": True, "reason": "8-bit QDQ graph: integer kernels without VNNI would saturate",
    })
