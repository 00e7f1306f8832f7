"""The ``fp16`` scheme: FP16 weights and compute, float32 inputs and outputs (the cuda target).

``keep_io_types`` leaves the graph's inputs and outputs float32, so runtimes feed and read the same
arrays as for FP32, and the file still runs on ONNX Runtime CPU (the cuda target's fallback).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vledge.compress.quantize.base import SchemeConfig, register
from vledge.compress.quantize.tools import (
    check_keep_fp32, count_ops, onnx_tower_spec, ort_runner, output_path, record_cosine, require_onnx,
    static_input_shape,
)
from vledge.errors import ExportError

log = logging.getLogger(__name__)


@dataclass
class Fp16Config(SchemeConfig):
    """``fp16`` settings: ``SchemeConfig``'s (``keep_fp32`` nodes stay float32; calibration samples only
    feed the in-sample cosine record)."""

    scheme = "fp16"


@register(Fp16Config)
def quantize_fp16(onnx_path: Path, kind: str, calibration, out_dir: Path, config: Fp16Config):
    """Convert float32 initializers and ops to float16, except ``config.keep_fp32`` nodes."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    require_onnx(onnx_path, "fp16")
    model = onnx.load(str(onnx_path))
    try:
        converted = convert_float_to_float16(
            model, keep_io_types=True, node_block_list=check_keep_fp32(onnx_path, kind, config) or None,
        )
    except Exception as exc:  # the converter raises many unrelated types
        raise ExportError(f"FP16 conversion of {onnx_path.name} failed: {type(exc).__name__}: {exc}") from exc
    # The converter appends the input Casts at the end of the node list; ONNX Runtime does not mind,
    # the ONNX checker (and stricter runtimes) want nodes in topological order.
    OnnxModel(converted).topological_sort()
    out = output_path(out_dir, kind, ".onnx")
    onnx.save(converted, str(out))
    fp16_initializers = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in converted.graph.initializer)
    details = {
        "scheme": "fp16",
        "method": "fp16",
        "keep_io_types": True,
        "keep_fp32": list(config.keep_fp32),
        "fp16_initializers": fp16_initializers,
        "casts": count_ops(out).get("Cast", 0),
        "reason": "the cuda target runs FP16 on tensor cores; float32 I/O keeps runtimes unchanged",
    }
    if calibration is not None:
        shape = static_input_shape(onnx_path, kind)
        record_cosine(details, ort_runner(onnx_path), ort_runner(out), calibration, kind, "fp16", shape)
    return onnx_tower_spec(out, "fp16", details)
