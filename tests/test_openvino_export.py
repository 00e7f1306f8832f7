"""Stage 6 (OpenVINO IR) and the NNCF schemes: named inputs, static or dynamic shapes, parity with the
ONNX tower, quantized ops really present, runs on OpenVINO CPU at f32, embeddings close to FP32 on
real Fashion-MNIST images and captions. Thresholds sit below what was measured (in the comments).
"""

import functools
import os
from types import SimpleNamespace

import numpy as np
import pytest

from vledge.compress.export import export_onnx
from vledge.compress.export import count_ov_ops, export_openvino
from vledge.compress.quantize import CalibrationData, default_config, quantize
from vledge.data.fashion_mnist import DEFAULT_DIR, FashionMNIST
from vledge.errors import ConfigError

pytestmark = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason="Fashion-MNIST is not installed")
SEQ = 16  # the tiny tokenizer's max_length


@functools.lru_cache(maxsize=1)
def core():
    import openvino as ov

    return ov.Core()


def compiled(path):
    # This CPU runs bfloat16 by default; f32 makes parity meaningful.
    return core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def embed_ov(path, feeds):
    model = compiled(path)
    out = np.concatenate([model(f)[0] for f in feeds])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def read_ops(path):
    return count_ov_ops(core().read_model(str(path)))


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from tiny_models import tiny_dual_encoder

    folder = tmp_path_factory.mktemp("fp32")
    model = tiny_dual_encoder("vit")
    onnx_paths = {k: folder / f"{k}.onnx" for k in ("image", "text")}
    ir = {}
    for kind, path in onnx_paths.items():
        export_onnx(model, kind, path)
        ir[kind] = export_openvino(path, kind, folder / f"{kind}.xml")
    return SimpleNamespace(
        model=model, onnx=onnx_paths, ir=ir, folder=folder,
        calibration=CalibrationData.from_dataset(model, FashionMNIST("train"), 48, seed=0),
        evaluation=CalibrationData.from_dataset(model, FashionMNIST("test"), 32, seed=1),
    )


def test_dynamic_ir_has_named_inputs_and_matches_onnx(towers):
    import onnxruntime as ort

    image, text = towers.ir["image"], towers.ir["text"]
    assert (image.file, image.format, image.precision) == ("image.xml", "openvino", "fp32")
    assert (towers.folder / "image.bin").is_file()
    assert [(t.name, t.dtype, t.shape) for t in image.inputs] == [("pixel_values", "float32", ["batch", 3, 28, 28])]
    assert [(t.name, t.dtype, t.shape) for t in text.inputs] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert [(t.name, t.shape) for t in text.outputs] == [("embeds", ["batch", 16])]
    assert not image.static and not text.static
    for kind in ("image", "text"):
        session = ort.InferenceSession(str(towers.onnx[kind]), providers=["CPUExecutionProvider"])
        for feed in towers.evaluation.batches(kind, 8)[:2] + towers.evaluation.batches(kind, 3)[:1]:
            got = compiled(towers.folder / f"{kind}.xml")(feed)[0]
            assert np.abs(got - session.run(["embeds"], feed)[0]).max() < 1e-4


def test_static_ir_has_fully_static_shapes(towers, tmp_path):
    import openvino as ov

    image = export_openvino(towers.onnx["image"], "image", tmp_path / "image.xml", static_batch=2)
    text = export_openvino(towers.onnx["text"], "text", tmp_path / "text.xml", static_batch=2, static_seq=SEQ)
    assert [t.shape for t in image.inputs] == [[2, 3, 28, 28]] and image.outputs[0].shape == [2, 16]
    assert [t.shape for t in text.inputs] == [[2, SEQ], [2, SEQ]] and text.static and image.static
    for kind in ("image", "text"):
        model = ov.Core().read_model(str(tmp_path / f"{kind}.xml"))
        assert all(p.get_partial_shape().is_static for p in list(model.inputs) + list(model.outputs))
        feed = towers.evaluation.batches(kind, 2, seq_len=SEQ if kind == "text" else None)[0]
        assert compiled(tmp_path / f"{kind}.xml")(feed)[0].shape == (2, 16)


def test_static_text_needs_a_sequence_length(towers, tmp_path):
    with pytest.raises(ConfigError, match=r"a static text tower needs static_seq \(the tokenizer's max_length\) as well as static_batch"):
        export_openvino(towers.onnx["text"], "text", tmp_path / "text.xml", static_batch=1)
    with pytest.raises(ConfigError, match=r"an OpenVINO IR file name must end in \.xml, got text\.onnx"):
        export_openvino(towers.onnx["text"], "text", tmp_path / "text.onnx")


# kind, min mean cosine, min worst cosine (measured mean / worst in the comments)
@pytest.mark.parametrize("kind,mean_cos,min_cos", [
    ("image", 0.99, 0.97),  # 0.9976 / 0.980
    ("text", 0.999, 0.999),  # 1.0000 / 0.9999
])
def test_nncf_quantizes_and_stays_close(towers, tmp_path, kind, mean_cos, min_cos):
    spec = quantize(towers.onnx[kind], kind, default_config("nncf"), towers.calibration, tmp_path)
    ops = read_ops(tmp_path / spec.file)
    assert ops.get("FakeQuantize", 0) > 0 and ops.get("Constant:i8", 0) > 0, ops
    assert (spec.file, spec.format, spec.precision) == (f"{kind}_encoder.xml", "openvino", "int8")
    q = spec.quantization
    assert (q["scheme"], q["method"], q["preset"], q["target_device"]) == ("nncf", "static", "mixed", "CPU")
    assert q["model_type"] == "transformer"  # the tiny image tower is a ViT
    assert q["quantized_nodes"]["FakeQuantize"] == ops["FakeQuantize"]
    feeds = towers.evaluation.batches(kind, 8)
    cos = (embed_ov(towers.folder / f"{kind}.xml", feeds) * embed_ov(tmp_path / spec.file, feeds)).sum(1)
    assert cos.mean() >= mean_cos and cos.min() >= min_cos, (cos.mean(), cos.min())


def test_nncf_symmetric_on_a_static_ir_keeps_it_static(towers, tmp_path):
    static = tmp_path / "static"
    export_openvino(towers.onnx["text"], "text", static / "text.xml", static_batch=1, static_seq=SEQ)
    spec = quantize(static / "text.xml", "text", default_config("nncf-symmetric"), towers.calibration, tmp_path)
    assert spec.static and [t.shape for t in spec.inputs] == [[1, SEQ], [1, SEQ]]
    q = spec.quantization
    assert (q["preset"], q["target_device"], q["activations"]) == ("performance", "NPU", "int8 symmetric")
    assert q["calibration"]["batches"] == 48  # batch 1, as the static shape demands
    assert read_ops(tmp_path / spec.file).get("FakeQuantize", 0) > 0
    feeds = towers.evaluation.batches("text", 1, seq_len=SEQ)
    cos = (embed_ov(static / "text.xml", feeds) * embed_ov(tmp_path / spec.file, feeds)).sum(1)
    assert cos.min() >= 0.999, cos.min()  # measured 0.9997


def test_weights_only_fallback_and_keep_fp32(towers, tmp_path):
    config = default_config("nncf", weights_only=True, keep_fp32=["/proj/MatMul"])
    spec = quantize(towers.onnx["text"], "text", config, None, tmp_path)
    ops = read_ops(tmp_path / spec.file)
    assert "FakeQuantize" not in ops and ops.get("Constant:u8", 0) > 0
    model = core().read_model(str(tmp_path / spec.file))
    weight_source = {op.get_friendly_name(): op.input_value(1).get_node() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"}
    # OpenVINO names the ONNX node /proj/MatMul after the output it produces; its weight stays a float constant.
    assert (weight_source["embeds"].get_type_name(), weight_source["embeds"].get_output_element_type(0).get_type_name()) == ("Constant", "f32")
    assert sum(src.get_type_name() != "Constant" for src in weight_source.values()) > 0  # others decompress from u8
    assert spec.quantization["method"] == "weights-only" and spec.quantization["keep_fp32"] == ["/proj/MatMul"]
    feeds = towers.evaluation.batches("text", 8)
    cos = (embed_ov(towers.folder / "text.xml", feeds) * embed_ov(tmp_path / spec.file, feeds)).sum(1)
    assert cos.min() >= 0.999, cos.min()  # measured 1.0000


def test_keep_fp32_unknown_name_is_an_error(towers, tmp_path):
    with pytest.raises(ConfigError, match=r"keep_fp32 names '/nope/MatMul', which is not a node of the text tower \(text\.onnx\)"):
        quantize(towers.onnx["text"], "text", default_config("nncf", weights_only=True, keep_fp32=["/nope/MatMul"]), None, tmp_path)
