"""Stage 5, quantize: one FP32 tower in, its quantized file and ``TowerSpec`` out, by a scheme's config.

Each scheme (``ort-cpu``, ``ort-tensorrt``, ``fp16``, ``nncf``, ``nncf-symmetric``) is one module here with
its own versioned config type; ``quantize(onnx_path, kind, config, calibration, out_dir)`` finds the
handler by the config's type, and ``default_config(name)`` gives a scheme's config by the name the
targets table uses. A new scheme is one new module: the package lists its modules on first lookup.
Config types are also importable from here by class name (``from vledge.compress.quantize import
OrtCpuConfig``).
"""

from vledge.compress.quantize.api import (
    config_for_target, config_from_dict, default_config, quantize, quantize_towers, scheme_names,
)
from vledge.compress.quantize.base import SchemeConfig, schemes
from vledge.compress.quantize.calibration import CalibrationData
from vledge.compress.quantize.tools import count_ops

__all__ = [
    "CalibrationData", "SchemeConfig", "config_for_target", "config_from_dict", "count_ops", "default_config",
    "quantize", "quantize_towers", "scheme_names",
]


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    for config in schemes().values():
        if config.__name__ == name:
            return config
    raise AttributeError(f"module 'vledge.compress.quantize' has no attribute {name!r}")
