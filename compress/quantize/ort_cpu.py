"""The ``ort-cpu`` scheme: INT8 for ONNX Runtime CPU, static QOperator or dynamic per tower kind."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vledge.compress.quantize.base import KINDS, check_choice, register
from vledge.compress.quantize.ort_common import (
    CONV_STATIC_OPS, WEIGHT_OPS, OrtConfig, activation_matmuls, run_quantizer,
)
from vledge.compress.quantize.tools import check_keep_fp32, count_ops, has_attention, require_onnx
from vledge.cpu import host_cpu
from vledge.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("auto", "static", "dynamic")
CPU_PRESETS = ("auto", "avx512_vnni", "avx2", "arm64")
WEIGHT_BITS = (7, 8)

# The format per tower kind when ``ort_cpu_format`` says "auto". Image: measured on a student-size pair
# (resnet18 at 28 px), 2 threads, best of 150 on a shared host, ms at batch 1 / 8: static 1.23 / 2.56,
# FP32 1.85 / 5.69, dynamic 7.1 / 39 (ConvInteger is slow). Text: static, because dynamic INT8 computes
# one activation scale over the whole batch, so a prompt's embedding moved with its batch-mates and
# padding (up to 5e-3 on a 12-layer CLIP text tower); fixed calibrated scales move it by 0.
ORT_CPU_DEFAULT = {
    "image": ("static", "static QOperator U8S8 measured fastest on image towers; "
                        "dynamic INT8 convolutions ran 4-12x slower than FP32"),
    "text": ("static", "static INT8 (calibrated scales) keeps a prompt's embedding independent of its batch "
                       "and padding; dynamic INT8's per-batch scale does not"),
}
# Text towers: products with weights, and the token embedding table (INT8 storage, dequantized after the
# lookup): on a tiny CLIP text tower 162 -> 110 KB at the same cosine to FP32 (0.9995).
TEXT_OPS = ["MatMul", "Gather"]


@dataclass
class OrtCpuConfig(OrtConfig):
    """``ort-cpu`` settings (on top of ``OrtConfig``'s).

    - ``ort_cpu_format``: per tower kind, ``static`` (QOperator U8S8), ``dynamic`` or ``auto`` (the
      format measured right for that kind, ``ORT_CPU_DEFAULT``).
    - ``cpu_preset``: Optimum's CPU preset (``auto``: U8S8 on every compressing machine, see
      ``default_cpu_preset``; ``avx2`` is Optimum's U8U8).
    - ``weight_bits``: 7 (default) keeps integer towers exact on every x86 CPU; 8 needs VNNI or AMX to
      keep its accuracy (see ``vledge.cpu``), so such a tower records ``requires_isa`` and the bundle
      carries a 7-bit copy that CPUs without them load instead.
    """

    scheme = "ort-cpu"
    ort_cpu_format: dict[str, str] = field(default_factory=lambda: {"image": "auto", "text": "auto"})
    cpu_preset: str = "auto"
    weight_bits: int = 7

    def __post_init__(self):
        super().__post_init__()
        where = type(self).__name__
        if not isinstance(self.ort_cpu_format, dict) or set(self.ort_cpu_format) - set(KINDS):
            raise ConfigError(f"{where}.ort_cpu_format must map 'image' and 'text' to a format, got {self.ort_cpu_format!r}")
        self.ort_cpu_format = {"image": "auto", "text": "auto", **self.ort_cpu_format}
        for kind, fmt in self.ort_cpu_format.items():
            check_choice(f"{where}.ort_cpu_format[{kind!r}]", fmt, FORMATS)
        check_choice(f"{where}.cpu_preset", self.cpu_preset, CPU_PRESETS)
        if type(self.weight_bits) is not int or self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"{where}.weight_bits must be 7 (exact on every CPU) or 8 (needs VNNI/AMX on x86), "
                              f"got {self.weight_bits!r}")


def default_cpu_preset() -> str:
    """Optimum's CPU preset when ``cpu_preset`` is ``auto``: U8S8 (``avx512_vnni``, or ``arm64`` on ARM)
    whatever the compressing machine has, so a bundle does not depend on where it was made. Optimum's
    ``avx2`` preset is U8U8: on the demo teacher's image tower it ran 2x slower at batch 8 and still lost
    accuracy on an AVX2-only CPU (worst cosine 0.943); 7-bit U8S8 weights kept 0.9988.
    """
    return "arm64" if host_cpu().is_arm else "avx512_vnni"


@register(OrtCpuConfig)
def quantize_ort_cpu(onnx_path: Path, kind: str, calibration, out_dir: Path, config: OrtCpuConfig):
    """INT8 for ONNX Runtime CPU: static QOperator or dynamic, per tower kind (see ``ORT_CPU_DEFAULT``)."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    require_onnx(onnx_path, "ort-cpu")
    fmt, reason = ORT_CPU_DEFAULT[kind]
    if config.ort_cpu_format[kind] != "auto":
        fmt, reason = config.ort_cpu_format[kind], f"set by OrtCpuConfig.ort_cpu_format[{kind!r}]"
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
    return run_quantizer(onnx_path, kind, calibration, out_dir, config, qconfig, details, calibrate=static,
                         weight_bits=config.weight_bits)


def _default_ops(onnx_path: Path, kind: str, static: bool) -> list[str]:
    """Op types when the config gives none for this tower kind (see ``CONV_STATIC_OPS``)."""
    if kind == "text":
        return TEXT_OPS
    if not static:
        return ["Conv", "MatMul"]
    return WEIGHT_OPS if has_attention(count_ops(onnx_path)) else CONV_STATIC_OPS
