"""Helpers the scheme modules share: checks, ONNX graph facts, the in-sample cosine record, ORT runners."""

from __future__ import annotations

import logging
from pathlib import Path

from vledge.bundle import TensorSpec, TowerSpec
from vledge.errors import ConfigError
from vledge.registry import did_you_mean

log = logging.getLogger(__name__)

COSINE_WARNING = 0.99  # mean cosine to FP32 below which a scheme warns


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


def check_keep_fp32(onnx_path: Path, kind: str, config) -> list[str]:
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
                f"{type(config).__name__}.keep_fp32 names {name!r}, which is not a node of the {kind} tower "
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
            "keep_fp32 for the layers that lose most, or another format", scheme, kind,
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
