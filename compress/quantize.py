"""Stage 5, quantize: one dispatcher over a registry of schemes, and the one config they all read.

Each scheme (``ort-cpu``, ``ort-tensorrt``, ``fp16``, ``nncf``, ``nncf-symmetric``) is a handler in
``QUANTIZERS``, registered by its own module; a new scheme registers itself and never edits
``quantize_tower``. A handler takes the FP32 ONNX tower and writes ``{kind}_encoder.<ext>`` into
``out_dir``, returning the bundle ``TowerSpec`` with what was done in its ``quantization`` dict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from vledge.bundle import TensorSpec, TowerSpec
from vledge.configs import versioned_fields
from vledge.registry import did_you_mean
from vledge.errors import ConfigError
from vledge.registry import Registry

log = logging.getLogger(__name__)

CONFIG_VERSION = 1
KINDS = ("image", "text")
ORT_CPU_FORMATS = ("auto", "static", "dynamic")
CPU_PRESETS = ("auto", "avx512_vnni", "avx2", "arm64")
WEIGHT_BITS = (7, 8)
COSINE_WARNING = 0.99  # mean cosine to FP32 below which quantize_tower warns

# handler(onnx_path, kind, calibration, out_dir, config) -> TowerSpec
Quantizer = Callable[..., TowerSpec]
QUANTIZERS: Registry[Quantizer] = Registry("quantization scheme")


@dataclass
class QuantizeConfig:
    """Quantization settings; each scheme reads the fields that concern it and ignores the rest.

    - ``calibration_samples``: items drawn for static calibration (``CalibrationData.from_dataset``).
    - ``calibration_batch``: batch size of the calibration feeds (static-shape towers use their own).
    - ``per_channel``: per-output-channel weight scales (ONNX Runtime schemes).
    - ``image_op_types``: ONNX op types quantized in image towers (None: the scheme's default).
    - ``text_op_types``: the same for text towers (None: MatMul, and on ``ort-cpu`` Gather too).
      Static INT8 over every op type wrecked text towers (cosine 0.2-0.3 to FP32) and MatMul alone
      kept 0.9995; Gather stores the token embedding table in INT8 (about a sixth of CLIP ViT-B's
      weights), dequantized after the lookup, at the same cosine.
    - ``keep_fp32``: ONNX node names left in float (the verify gate's recovery for offending layers);
      OpenVINO schemes map them to IR ops, and also take IR op names. A name that matches nothing raises.
    - ``ort_cpu_format``: per tower kind, ``static`` (QOperator U8S8), ``dynamic`` or ``auto``
      (the format measured faster and accurate for that kind, see ``quantize_ort``).
    - ``cpu_preset``: Optimum's CPU preset (``auto``: U8S8 on every compressing machine, see
      ``quantize_ort.default_cpu_preset``; ``avx2`` is Optimum's U8U8).
    - ``weights_only``: OpenVINO schemes compress weights to INT8 without activation quantization.
    - ``weight_bits``: 7 (default) keeps CPU integer towers exact on every x86 CPU; 8 needs VNNI or
      AMX to keep its accuracy (see ``vledge.cpu``), so such a tower records ``requires_isa`` and the
      bundle carries a 7-bit copy that CPUs without them load instead. TensorRT towers always use 8.
    """

    calibration_samples: int = 128
    calibration_batch: int = 8
    per_channel: bool = True
    image_op_types: list[str] | None = None
    text_op_types: list[str] | None = None
    keep_fp32: list[str] = field(default_factory=list)
    ort_cpu_format: dict[str, str] = field(default_factory=lambda: {"image": "auto", "text": "auto"})
    cpu_preset: str = "auto"
    weights_only: bool = False
    weight_bits: int = 7

    def __post_init__(self):
        where = "QuantizeConfig"
        for name in ("calibration_samples", "calibration_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{name} must be a positive integer, got {value!r}")
        for name in ("per_channel", "weights_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("image_op_types", "text_op_types", "keep_fp32"):
            value = getattr(self, name)
            if value is None and name != "keep_fp32":
                continue
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}.{name} must be a list of names, got {value!r}")
            if name != "keep_fp32" and not value:
                raise ConfigError(f"{where}.{name} is empty: give op types such as ['MatMul'], or null for the default")
            setattr(self, name, list(value))
        if not isinstance(self.ort_cpu_format, dict) or set(self.ort_cpu_format) - set(KINDS):
            raise ConfigError(
                f"{where}.ort_cpu_format must map 'image' and 'text' to a format, got {self.ort_cpu_format!r}"
            )
        self.ort_cpu_format = {"image": "auto", "text": "auto", **self.ort_cpu_format}
        for kind, fmt in self.ort_cpu_format.items():
            _check_choice(f"{where}.ort_cpu_format[{kind!r}]", fmt, ORT_CPU_FORMATS)
        _check_choice(f"{where}.cpu_preset", self.cpu_preset, CPU_PRESETS)
        if type(self.weight_bits) is not int or self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(
                f"{where}.weight_bits must be 7 (exact on every CPU) or 8 (needs VNNI/AMX on x86), got {self.weight_bits!r}"
            )

    def op_types(self, kind: str) -> list[str] | None:
        return self.image_op_types if kind == "image" else self.text_op_types

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "QuantizeConfig":
        return cls(**versioned_fields(cls, data, CONFIG_VERSION))


def _check_choice(where: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}.{hint}")


def quantize_tower(
    onnx_path: str | Path,
    kind: str,
    scheme: str,
    calibration=None,
    out_dir: str | Path = ".",
    config: QuantizeConfig | None = None,
) -> TowerSpec:
    """Quantize one FP32 ONNX tower with ``scheme`` into ``out_dir/{kind}_encoder.<ext>``.

    ``calibration`` is a ``CalibrationData``; schemes that calibrate raise ``ConfigError`` without it.
    Returns the tower's ``TowerSpec`` (file name relative to ``out_dir``, format, precision, shapes)
    with a ``quantization`` dict recording scheme, method, format, settings, node counts and reasons.
    """
    config = config or QuantizeConfig()
    if kind not in KINDS:
        raise ConfigError(f"tower kind must be 'image' or 'text', got {kind!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX tower to quantize not found: {onnx_path}; export it first (export_onnx)")
    handler = QUANTIZERS.get(scheme)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    spec = handler(onnx_path, kind, calibration, out_dir, config)
    q = spec.quantization
    log.info(
        "quantize %s tower: %s %s -> %s (%s) in %.1f s", kind, scheme, q.get("method", ""),
        spec.file, spec.precision, time.perf_counter() - start,
    )
    return spec


def quantize_towers(onnx_paths: dict[str, str | Path], scheme: str, calibration=None, out_dir: str | Path = ".",
                    config: QuantizeConfig | None = None) -> dict[str, TowerSpec]:
    """``quantize_tower`` for each ``{kind: onnx_path}``."""
    return {kind: quantize_tower(path, kind, scheme, calibration, out_dir, config) for kind, path in onnx_paths.items()}


def require_calibration(calibration, kind: str, scheme: str):
    """The calibration data a static scheme needs, or a ConfigError saying how to make it."""
    if calibration is None:
        raise ConfigError(
            f"quantization scheme {scheme!r} calibrates the {kind} tower and needs calibration data: "
            "pass CalibrationData.from_dataset(model, data, n)"
        )
    return calibration


def require_onnx(path: Path, scheme: str) -> None:
    """ONNX Runtime schemes read ONNX files only (an OpenVINO IR cannot go back)."""
    if path.suffix != ".onnx":
        raise ConfigError(
            f"quantization scheme {scheme!r} needs an ONNX tower, got {path.name}; pass the exported .onnx file"
        )


def check_keep_fp32(onnx_path: Path, kind: str, config: "QuantizeConfig") -> list[str]:
    """``config.keep_fp32``, after checking every name is a node of the ONNX graph (a typo would
    otherwise silently quantize the layer it meant to protect)."""
    if not config.keep_fp32:
        return []
    import onnx

    nodes = {n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    for name in config.keep_fp32:
        if name not in nodes:
            hint = did_you_mean(name, nodes)
            raise ConfigError(
                f"QuantizeConfig.keep_fp32 names {name!r}, which is not a node of the {kind} tower "
                f"({onnx_path.name}).{hint}"
            )
    return list(config.keep_fp32)


def has_attention(op_counts: dict[str, int]) -> bool:
    """Whether a tower graph holds attention (a ViT or CLIP image tower): such towers are quantized
    like text towers, because quantizing their Add/Mul/LayerNorm inputs hurts as it does in text."""
    return any(op_counts.get(op) for op in ("Softmax", "ScaledDotProductAttention", "Attention"))


def record_cosine(details: dict, reference, candidate, calibration, kind: str, scheme: str,
                  static_shape: tuple[int | None, int | None] = (None, None), max_batches: int = 4) -> None:
    """Compare ``candidate`` with the FP32 ``reference`` (functions feed -> embeddings) on a few
    calibration batches; record the cosine in ``details`` and warn when it is low.

    In-sample and quick: the verify stage judges accuracy on held-out data.
    """
    import numpy as np

    batch, seq = static_shape
    feeds = calibration.batches(kind, batch or 8, seq)[:max_batches]
    a = np.concatenate([reference(f) for f in feeds]).astype(np.float64)
    b = np.concatenate([candidate(f) for f in feeds]).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(denom, 1e-30)
    details["cosine_to_fp32"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5),
                                 "samples": int(len(cos)), "data": "calibration"}
    if cos.mean() < COSINE_WARNING:
        log.warning(
            "%s %s tower keeps only cosine %.3f (mean; worst %.3f) to FP32 on calibration data; consider "
            "QuantizeConfig.keep_fp32 for the layers that lose most, or another format", scheme, kind,
            cos.mean(), cos.min(),
        )


def output_path(out_dir: Path, kind: str, suffix: str) -> Path:
    return Path(out_dir) / f"{kind}_encoder{suffix}"


def onnx_tower_spec(path: Path, precision: str, quantization: dict) -> TowerSpec:
    """Describe an ONNX file as a TowerSpec: names, dtypes and shapes read from its graph."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values) -> list[TensorSpec]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "dynamic") for d in t.shape.dim]
            out.append(TensorSpec(v.name, str(helper.tensor_dtype_to_np_dtype(t.elem_type)), dims))
        return out

    return TowerSpec(
        file=path.name, format="onnx", precision=precision,
        inputs=describe(graph.input), outputs=describe(graph.output), quantization=quantization,
    )


def ort_runner(path: Path, float_qdq: bool = False):
    """A function feed -> embeddings over an ONNX Runtime CPU session (``float_qdq``: a QDQ graph's
    integer ops run in float, the same results on every CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if float_qdq:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(["embeds"], feed)[0]


def static_input_shape(onnx_path: Path, kind: str) -> tuple[int | None, int | None]:
    """(batch, sequence) when the graph's first input has fixed sizes, else None for each."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return fixed[0], (fixed[1] if kind == "text" else None)


def count_ops(path: str | Path) -> dict[str, int]:
    """Node counts by op type of an ONNX file (how tests and reports prove a graph is quantized)."""
    import collections

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node))


# The built-in schemes register themselves on import.
from vledge.compress import quantize_fp16, quantize_openvino, quantize_ort  # noqa: E402,F401
