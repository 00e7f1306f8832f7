"""The ``nncf`` scheme (intel-cpu): NNCF post-training INT8 for OpenVINO CPU, the mixed preset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vledge.compress.quantize.base import register
from vledge.compress.quantize.openvino_ptq import NncfConfig, quantize_openvino


@dataclass
class NncfCpuConfig(NncfConfig):
    """``nncf`` settings: ``NncfConfig``'s."""

    scheme = "nncf"


@register(NncfCpuConfig)
def quantize_nncf(onnx_path: Path, kind: str, calibration, out_dir: Path, config: NncfCpuConfig):
    """NNCF post-training INT8 for OpenVINO CPU: asymmetric activations (the mixed preset)."""
    return quantize_openvino(onnx_path, kind, calibration, out_dir, config, symmetric=False)
