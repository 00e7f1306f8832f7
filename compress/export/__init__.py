"""Stage 4, export: one FP32 file per tower (ONNX, then OpenVINO IR for OpenVINO targets), parity checked.

``export_onnx`` and ``export_openvino`` export one tower; ``export_towers`` runs the stage for a model;
``compact_towers`` gives the ONNX files a bundle ships short internal names.
"""

from vledge.compress.export.compact import compact_onnx, compact_towers
from vledge.compress.export.stage import (
    PARITY_TOLERANCE,
    ExportConfig,
    Exported,
    export_towers,
    fp32_tower,
    tower_files,
)
from vledge.compress.export.to_onnx import OPSET, TOWER_IO, dummy_inputs, export_onnx, onnx_parity
from vledge.compress.export.to_openvino import convert_onnx, count_ov_ops, export_openvino, save_openvino

__all__ = [
    "OPSET", "PARITY_TOLERANCE", "TOWER_IO", "ExportConfig", "Exported", "compact_onnx", "compact_towers",
    "convert_onnx", "count_ov_ops", "dummy_inputs",
    "export_onnx", "export_openvino", "export_towers", "fp32_tower", "onnx_parity", "save_openvino", "tower_files",
]
