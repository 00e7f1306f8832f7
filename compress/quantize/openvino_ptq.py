"""What the OpenVINO INT8 schemes through NNCF share: ``nncf`` (intel-cpu) and ``nncf-symmetric`` (intel-npu).

The tower is converted to IR with the shapes of its source: export the ONNX with static shapes (or
pass an IR made by ``export_openvino(..., static_batch=...)``) for the NPU, and calibration batches
follow those shapes. ``weights_only`` falls back to INT8 weight compression without
activation quantization, for towers whose accuracy post-training quantization cannot keep.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from vledge.compress.export.to_openvino import convert_onnx, count_ov_ops, save_openvino
from vledge.compress.quantize.base import SchemeConfig, check_bool, check_positive
from vledge.compress.quantize.tools import has_attention, output_path, record_cosine, require_calibration
from vledge.cpu import VNNI
from vledge.errors import ConfigError, ExportError

log = logging.getLogger(__name__)


@dataclass
class NncfConfig(SchemeConfig):
    """Settings of the NNCF schemes (on top of ``SchemeConfig``'s).

    - ``calibration_batch``: batch size of the calibration feeds (static-shape towers use their own).
    - ``weights_only``: INT8 weight compression without activation quantization.
    - ``weight_bits``: 7 (default, NNCF's overflow fix) keeps integer towers exact on every x86 CPU; 8
      needs VNNI or AMX, so such a tower records ``requires_isa`` and the bundle carries a 7-bit copy.
    """

    calibration_batch: int = 8
    weights_only: bool = False
    weight_bits: int = 7

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "calibration_batch")
        check_bool(self, "weights_only")
        if type(self.weight_bits) is not int or self.weight_bits not in (7, 8):
            raise ConfigError(f"{type(self).__name__}.weight_bits must be 7 (exact on every CPU) or 8 (needs VNNI/AMX "
                              f"on x86), got {self.weight_bits!r}")


def quantize_openvino(source: Path, kind: str, calibration, out_dir: Path, config: NncfConfig, symmetric: bool):
    """NNCF post-training INT8 (or weight compression) of one tower, saved as IR in ``out_dir``."""
    import openvino as ov

    scheme = config.scheme
    model = ov.Core().read_model(str(source)) if source.suffix == ".xml" else convert_onnx(source, kind)
    reference = ov_runner(model) if calibration is not None else None
    ignored = _ov_names(model, source, config.keep_fp32, kind) if config.keep_fp32 else None
    details = {"scheme": scheme, "keep_fp32": list(config.keep_fp32)}
    if config.weights_only:
        quantized = _compress_weights(model, kind, symmetric, ignored, details)
    else:
        calibration = require_calibration(calibration, kind, scheme)
        quantized = _static(model, kind, calibration, config, symmetric, ignored, details, config.weight_bits)
    low_precision = ("FakeQuantize", "Constant:i8", "Constant:u8")
    details["quantized_nodes"] = {k: n for k, n in count_ov_ops(quantized).items() if k in low_precision}
    if reference is not None:
        record_cosine(details, reference, ov_runner(quantized), calibration, kind, scheme, _static_shape(model, kind))
    spec = save_openvino(quantized, output_path(out_dir, kind, ".xml"), kind, "int8", details)
    if config.weights_only or config.weight_bits == 7:
        return spec
    # 8-bit weights need VNNI on an x86 CPU: the 7-bit copy is what CPUs without it load.
    fallback = {"weight_bits": 7}
    seven_bit = _static(model.clone(), kind, calibration, config, symmetric, ignored, fallback, 7)
    record_cosine(fallback, reference, ov_runner(seven_bit), calibration, kind, f"{scheme} 7-bit", _static_shape(model, kind))
    fallback_spec = save_openvino(seven_bit, output_path(out_dir, kind, ".7bit.xml"), kind, "int8", fallback)
    fallback = {"file": fallback_spec.file, "weight_bits": 7, "cosine_to_fp32": fallback["cosine_to_fp32"],
                "reason": "7-bit weights: exact on CPUs without VNNI"}
    return dataclasses.replace(spec, requires_isa=[VNNI], fallback=fallback)


def _compress_weights(model, kind: str, symmetric: bool, ignored, details: dict):
    import nncf

    mode = nncf.CompressWeightsMode.INT8_SYM if symmetric else nncf.CompressWeightsMode.INT8_ASYM
    try:
        model = nncf.compress_weights(model, mode=mode, ignored_scope=_ignored_scope(ignored))
    except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError, RuntimeError) as exc:
        raise ExportError(f"NNCF weight compression of the {kind} tower failed: {type(exc).__name__}: {exc}") from exc
    # Weights are decompressed to float before use: no integer kernels, nothing a CPU must have.
    details.update(method="weights-only", weights=mode.value,
                   reason="set by weights_only: INT8 weights, float activations")
    return model


def _static(model, kind: str, calibration, config: NncfConfig, symmetric: bool, ignored, details: dict,
            weight_bits: int):
    """NNCF post-training quantization; 7-bit weights through NNCF's overflow fix on every layer."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    batch, seq = _static_shape(model, kind)
    dataset = calibration.nncf_dataset(kind, batch or config.calibration_batch, seq)
    # ViT / CLIP image towers too: transformer mode took a tiny ViT from cosine 0.97 to 0.99+.
    transformer = kind == "text" or has_attention(count_ov_ops(model))
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    target = nncf.TargetDevice.NPU if symmetric else nncf.TargetDevice.CPU
    overflow_fix = OverflowFix.ENABLE if weight_bits == 7 else OverflowFix.DISABLE
    try:
        quantized = nncf.quantize(
            model, dataset, preset=preset, target_device=target, subset_size=dataset.get_length(),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None, ignored_scope=_ignored_scope(ignored),
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix),
        )
    except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError, RuntimeError) as exc:
        raise ExportError(f"NNCF quantization of the {kind} tower failed: {type(exc).__name__}: {exc}") from exc
    details.update(
        method="static", preset=preset.value, target_device=target.value,
        model_type="transformer" if transformer else "default",
        activations="int8 symmetric" if symmetric else "int8 asymmetric", weights="int8 symmetric per-channel",
        weight_bits=weight_bits,
        calibration={"samples": len(calibration.samples(kind)), "batches": dataset.get_length(),
                     "source": calibration.source},
        reason="symmetric INT8 is what the NPU runs" if symmetric else "NNCF mixed preset: OpenVINO CPU's INT8 path",
    )
    return quantized


def _ignored_scope(names):
    import nncf

    return nncf.IgnoredScope(names=names) if names else None


def ov_runner(model):
    """A function feed -> embeddings over OpenVINO CPU at f32 (this CPU would otherwise run bfloat16)."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feed: compiled(feed)[0]


def _static_shape(model, kind: str) -> tuple[int | None, int | None]:
    shape = model.inputs[0].get_partial_shape()
    if not shape.is_static:
        return None, None
    return shape[0].get_length(), (shape[1].get_length() if kind == "text" else None)


def _ov_names(model, source: Path, names: list[str], kind: str) -> list[str]:
    """OpenVINO op names for ``keep_fp32`` names, which may name ONNX nodes or IR ops.

    OpenVINO renames some ops on conversion (a Conv with bias becomes ``<name>/WithoutBiases``, the
    last op takes the output's name), so ONNX nodes are matched through their output tensor names.
    """
    tensor_of = {}
    if source.suffix == ".onnx":
        import onnx

        tensor_of = {n.name: set(n.output) for n in onnx.load(str(source), load_external_data=False).graph.node}
    found = []
    for name in names:
        matches = [
            op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_friendly_name() in (name, f"{name}/WithoutBiases")
            or any(tensor_of.get(name, set()) & out.get_names() for out in op.outputs())
        ]
        if not matches:
            raise ConfigError(
                f"NncfConfig.keep_fp32 names {name!r}, which is not a node of the {kind} tower ({source.name})"
            )
        found += matches
    return sorted(set(found))
