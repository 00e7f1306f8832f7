"""The ``nncf-symmetric`` scheme (intel-npu): NNCF post-training INT8 with symmetric activations and weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vledge.compress.quantize.base import register
from vledge.compress.quantize.openvino_ptq import NncfConfig, quantize_openvino


@dataclass
class NncfSymmetricConfig(NncfConfig):
    """``nncf-symmetric`` settings: ``NncfConfig``'s."""

    scheme = "nncf-symmetric"


@register(NncfSymmetricConfig)
def quantize_nncf_symmetric(onnx_path: Path, kind: str, calibration, out_dir: Path, config: NncfSymmetricConfig):
    """NNCF post-training INT8 for the NPU: symmetric activations and weights (the performance preset)."""
    return quantize_openvino(onnx_path, kind, calibration, out_dir, config, symmetric=True)
