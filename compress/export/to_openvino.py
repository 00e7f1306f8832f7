"""Stage 4, export, for OpenVINO targets: an ONNX tower to OpenVINO IR (``.xml`` + ``.bin``).

Inputs keep their names (``openvino.convert_model`` numbers them otherwise). Static targets (the NPU)
get every dimension fixed; other targets keep a dynamic batch (and sequence, for text).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vledge.bundle import TensorSpec, TowerSpec
from vledge.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

INPUTS = {"image": (("pixel_values", "f32"),), "text": (("input_ids", "i64"), ("attention_mask", "i64"))}
DYNAMIC_NAMES = ("batch", "sequence")


def convert_onnx(
    onnx_path: str | Path,
    kind: str,
    *,
    static_batch: int | None = None,
    static_seq: int | None = None,
    image_size: int | None = None,
):
    """Read an ONNX tower into an ``openvino.Model`` with named inputs and the requested shapes.

    With ``static_batch`` every dimension is fixed: the batch, the sequence length (``static_seq``,
    required for text) or the image size (``image_size``, default the ONNX graph's). Without it the
    batch (and the text sequence) stay dynamic, unless the ONNX graph itself is static.
    """
    import onnx
    import openvino as ov

    if kind not in INPUTS:
        raise ConfigError(f"tower kind must be 'image' or 'text', got {kind!r}")
    if static_batch is not None and static_batch < 1:
        raise ConfigError(f"static_batch must be a positive integer, got {static_batch!r}")
    if static_batch is not None and kind == "text" and not static_seq:
        raise ConfigError("a static text tower needs static_seq (the tokenizer's max_length) as well as static_batch")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    onnx_dims = {
        v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        for v in graph.input
    }
    inputs = []
    for name, element in INPUTS[kind]:
        if name not in onnx_dims:
            raise ExportError(
                f"{onnx_path} has no input {name!r} (inputs: {sorted(onnx_dims)}); export it with export_onnx"
            )
        shape = list(onnx_dims[name])
        if static_batch is not None:
            shape[0] = static_batch
            if kind == "text":
                shape[1] = static_seq
            else:
                shape[2] = shape[3] = image_size or shape[2]
            if min(shape) < 1:
                raise ConfigError(f"cannot make {name} static: its shape {shape} still has a free dimension")
        inputs.append((name, shape, getattr(ov.Type, element)))
    try:
        return ov.convert_model(str(onnx_path), input=inputs)
    except Exception as exc:  # the converter raises many unrelated types
        raise ExportError(f"OpenVINO conversion of {onnx_path} failed: {type(exc).__name__}: {exc}") from exc


def save_openvino(ov_model, xml_path: str | Path, kind: str, precision: str = "fp32",
                  quantization: dict | None = None) -> TowerSpec:
    """Write ``xml_path`` and its ``.bin`` (float weights kept float32) and describe them as a TowerSpec."""
    import openvino as ov

    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR file name must end in .xml, got {xml_path.name}")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 would halve the file but change FP32 numerics; quantized weights are int8 anyway.
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    return TowerSpec(
        file=xml_path.name, format="openvino", precision=precision,
        inputs=[_tensor_spec(p, kind) for p in ov_model.inputs],
        outputs=[_tensor_spec(p, kind) for p in ov_model.outputs],
        quantization=dict(quantization or {}),
    )


def export_openvino(
    onnx_path: str | Path,
    kind: str,
    xml_path: str | Path,
    *,
    static_batch: int | None = None,
    static_seq: int | None = None,
    image_size: int | None = None,
) -> TowerSpec:
    """Convert an FP32 ONNX tower to OpenVINO IR at ``xml_path`` (see ``convert_onnx`` for shapes)."""
    model = convert_onnx(onnx_path, kind, static_batch=static_batch, static_seq=static_seq, image_size=image_size)
    spec = save_openvino(model, xml_path, kind)
    log.info("export %s tower: %s -> %s (%s shapes)", kind, Path(onnx_path).name, spec.file,
             "static" if spec.static else "dynamic")
    return spec


def count_ov_ops(ov_model) -> dict[str, int]:
    """Op counts of an OpenVINO model, with low-precision constants counted as ``Constant:<type>``."""
    counts: dict[str, int] = {}
    for op in ov_model.get_ordered_ops():
        name = op.get_type_name()
        if name == "Constant":
            name = f"Constant:{op.get_output_element_type(0).get_type_name()}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _tensor_spec(port, kind: str) -> TensorSpec:
    shape = []
    for axis, dim in enumerate(port.get_partial_shape()):
        if dim.is_static:
            shape.append(dim.get_length())
        else:
            shape.append(DYNAMIC_NAMES[axis] if axis < 2 and (axis == 0 or kind == "text") else "dynamic")
    return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, shape)
