"""Stage 5, quantize (ONNX Runtime schemes and FP16): quantized nodes really present, runs on ORT CPU,
embeddings close to the FP32 tower on real Fashion-MNIST images and captions.

The thresholds hold on CPUs with and without VNNI (checked on an AVX-512 VNNI EPYC, and under QEMU's
AVX2-only EPYC-Rome model, whose U8S8 kernels saturate): CPU schemes quantize weights to 7 bits.

Cosine thresholds were set below what was measured on these tiny seeded towers (noted per case);
the tiny ViT tower quantizes about as well as a student-size one, the width-0.25 MobileNet worse.
"""

import logging
import os
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from vledge.compress.export import export_onnx
from vledge.compress.quantize import CalibrationData, count_ops, default_config, quantize
from vledge.compress.quantize.ort_common import activation_matmuls
from vledge.compress.quantize.ort_cpu import default_cpu_preset
from vledge.cpu import host_cpu
from vledge.data.base import Subset
from vledge.data.fashion_mnist import DEFAULT_DIR, FashionMNIST
from vledge.errors import ConfigError

pytestmark = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason="Fashion-MNIST is not installed")


def embed(path, feeds, float_qdq=False):
    from vledge.compress.quantize.tools import ort_runner

    run = ort_runner(path, float_qdq)
    out = np.concatenate([run(f) for f in feeds])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def cosine_to_fp32(towers, kind, path, batch=8, float_qdq=False):
    feeds = towers.evaluation.batches(kind, batch)
    return (embed(towers.fp32[kind], feeds) * embed(path, feeds, float_qdq)).sum(1)


def recalibrate_batchnorm(model, data, n=256):
    """Re-estimate BatchNorm statistics on real images: a random conv tower at its initial statistics
    outputs ~1e-6, which no INT8 format represents; this gives it a trained tower's activation scales."""
    import torch

    for module in model.image_tower.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.image_tower.train()
    with torch.no_grad():
        model.image_tower(torch.from_numpy(data.batch(range(n), model.preprocess).pixels))
    return model.eval()


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from tiny_models import tiny_dual_encoder

    train, test = FashionMNIST("train"), FashionMNIST("test")
    folder = tmp_path_factory.mktemp("fp32")
    vit = tiny_dual_encoder("vit")
    conv = recalibrate_batchnorm(tiny_dual_encoder("mobilenet"), train)
    fp32 = {k: folder / f"{k}.onnx" for k in ("image", "text")}
    for kind, path in fp32.items():
        export_onnx(vit, kind, path)
    fp32["conv"] = folder / "conv.onnx"
    export_onnx(conv, "image", fp32["conv"])
    return SimpleNamespace(
        model=vit, fp32=fp32, folder=folder,
        calibration=CalibrationData.from_dataset(vit, train, 64, seed=0),
        evaluation=CalibrationData.from_dataset(vit, test, 48, seed=1),
    )


# scheme, config, tower, ops that must appear, method recorded, min mean cosine, min worst cosine
# (measured on these towers: mean / worst in the comments)
CASES = [
    ("ort-cpu", {}, "image", {"QLinearMatMul", "QLinearConv"}, "static", 0.995, 0.99),  # 0.9993 / 0.9973
    ("ort-cpu", {}, "text", {"QLinearMatMul"}, "static", 0.999, 0.999),  # 1.0000 / 0.9999
    ("ort-cpu", {"ort_cpu_format": {"image": "dynamic"}}, "image", {"MatMulInteger", "ConvInteger"}, "dynamic", 0.999, 0.995),  # 0.9997 / 0.9985
    ("ort-cpu", {"ort_cpu_format": {"text": "dynamic"}}, "text", {"MatMulInteger", "DynamicQuantizeLinear"}, "dynamic", 0.999, 0.999),  # 1.0000 / 1.0000
    ("ort-tensorrt", {}, "image", {"QuantizeLinear", "DequantizeLinear"}, "static", 0.995, 0.99),  # 0.9993 / 0.9975
    ("ort-tensorrt", {}, "text", {"QuantizeLinear", "DequantizeLinear"}, "static", 0.999, 0.999),  # 1.0000 / 0.9999
]


@pytest.mark.parametrize("scheme,overrides,kind,ops,method,mean_cos,min_cos", CASES)
def test_ort_schemes_quantize_run_and_stay_close(towers, tmp_path, scheme, overrides, kind, ops, method, mean_cos, min_cos):
    spec = quantize(towers.fp32[kind], kind, default_config(scheme, **overrides), towers.calibration, tmp_path)
    path = tmp_path / spec.file
    assert spec.file == f"{kind}_encoder.onnx" and spec.format == "onnx" and spec.precision == "int8"
    onnx.checker.check_model(str(path))
    counts = count_ops(path)
    assert all(counts.get(op, 0) > 0 for op in ops), counts
    assert spec.quantization["scheme"] == scheme and spec.quantization["method"] == method
    assert spec.quantization["quantized_nodes"] == {k: v for k, v in counts.items() if k in spec.quantization["quantized_nodes"]}
    assert spec.quantization["reason"] and spec.quantization["cosine_to_fp32"]["mean"] >= mean_cos
    # Text towers, and image towers with attention (this ViT), quantize weight ops only.
    text_ops = ["MatMul"] if scheme == "ort-tensorrt" else ["MatMul", "Gather"]
    expected_ops = text_ops if kind == "text" else ["Conv", "MatMul", "Gemm"] if method == "static" else ["Conv", "MatMul"]
    assert spec.quantization["op_types"] == expected_ops
    assert [t.name for t in spec.inputs] == (["pixel_values"] if kind == "image" else ["input_ids", "attention_mask"])
    assert spec.inputs[0].shape[0] == "batch" and spec.outputs[0].name == "embeds"
    # TensorRT towers keep 8-bit weights: a CPU without VNNI runs them with integer ops in float
    # (test_cpu_isa), so that is how they are checked everywhere; their fused integer kernels only where exact.
    tensorrt = scheme == "ort-tensorrt"
    runs = [True, False] if tensorrt and host_cpu().has("vnni") else [tensorrt]
    for float_qdq in runs:
        cos = cosine_to_fp32(towers, kind, path, float_qdq=float_qdq)
        assert cos.mean() >= mean_cos and cos.min() >= min_cos, (float_qdq, cos.mean(), cos.min())


def test_dynamic_int8_keeps_products_of_two_activations_in_fp32(towers, tmp_path):
    fp32 = towers.fp32["text"]
    kept = activation_matmuls(fp32)
    fp32_counts = count_ops(fp32)
    assert kept and len(kept) < fp32_counts["MatMul"]  # attention's scores and mixing, two a layer
    config = default_config("ort-cpu", ort_cpu_format={"text": "dynamic"})
    spec = quantize(fp32, "text", config, towers.calibration, tmp_path)
    graph = onnx.load(str(tmp_path / spec.file)).graph
    assert sorted(n.name for n in graph.node if n.op_type == "MatMul") == sorted(kept)
    assert count_ops(tmp_path / spec.file)["MatMulInteger"] == fp32_counts["MatMul"] - len(kept)
    assert spec.quantization["fp32_activation_matmuls"] == len(kept)


def test_ort_cpu_static_quantizes_every_conv_of_a_conv_tower(towers, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vledge.compress.quantize"):
        spec = quantize(towers.fp32["conv"], "image", default_config("ort-cpu"), towers.calibration, tmp_path)
    counts = count_ops(tmp_path / spec.file)
    assert counts.get("QLinearConv") == count_ops(towers.fp32["conv"])["Conv"] and "Conv" not in counts
    assert counts.get("QLinearAdd", 0) > 0  # conv towers keep residual chains in INT8
    q = spec.quantization
    assert q["format"] == "QOperator" and q["activations"] == "QUInt8 asymmetric" and q["preset"] == default_cpu_preset()
    # The in-sample check is recorded, and a low one is said out loud.
    assert q["cosine_to_fp32"]["mean"] < 0.99 and "ort-cpu image tower keeps only cosine" in caplog.text
    # The width-0.25 MobileNet (8-24 channels) is the worst case: measured 0.934 mean, 0.52 worst.
    feeds = towers.evaluation.batches("image", 8)
    cos = (embed(towers.fp32["conv"], feeds) * embed(tmp_path / spec.file, feeds)).sum(1)
    assert cos.mean() >= 0.85, cos.mean()


def test_tensorrt_is_symmetric_per_channel_qdq(towers, tmp_path):
    spec = quantize(towers.fp32["image"], "image", default_config("ort-tensorrt"), towers.calibration, tmp_path)
    graph = onnx.load(str(tmp_path / spec.file)).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric int8
    weight_scales = [inits[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear" and inits[n.input[1]].size > 1]
    assert weight_scales, "no per-channel weight scale found"
    assert not {"QLinearConv", "QLinearMatMul", "MatMulInteger"} & set(count_ops(tmp_path / spec.file))


def test_static_shape_tower_is_calibrated_at_its_own_shape(towers, tmp_path):
    static = export_onnx(towers.model, "text", tmp_path / "static.onnx", static_batch=2, static_seq=16)
    spec = quantize(tmp_path / "static.onnx", "text", default_config("ort-tensorrt"), towers.calibration, tmp_path)
    assert static.static and spec.static and [t.shape for t in spec.inputs] == [[2, 16], [2, 16]]
    assert spec.quantization["calibration"]["batches"] == 32  # 64 samples, batch 2, padded to 16 tokens
    assert spec.quantization["cosine_to_fp32"]["min"] >= 0.999  # measured 0.9999


def test_fp16_keeps_float32_io_and_runs_on_cpu(towers, tmp_path):
    for kind in ("image", "text"):
        spec = quantize(towers.fp32[kind], kind, default_config("fp16"), None, tmp_path)
        model = onnx.load(str(tmp_path / spec.file))
        onnx.checker.check_model(model)
        dtypes = [t.data_type for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        assert dtypes.count(onnx.TensorProto.FLOAT16) > 0 and dtypes.count(onnx.TensorProto.FLOAT) == 0
        assert spec.precision == "fp16" and spec.quantization["fp16_initializers"] == len(dtypes)
        assert [(t.name, t.dtype) for t in spec.inputs + spec.outputs] == (
            [("pixel_values", "float32")] if kind == "image" else [("input_ids", "int64"), ("attention_mask", "int64")]
        ) + [("embeds", "float32")]
        cos = cosine_to_fp32(towers, kind, tmp_path / spec.file)
        assert cos.min() >= 0.999, cos.min()  # measured 1.0000
    kept = quantize(towers.fp32["text"], "text", default_config("fp16", keep_fp32=["/proj/MatMul"]), None, tmp_path / "kept")
    initializers = onnx.load(str(tmp_path / "kept" / kept.file)).graph.initializer
    assert sum(t.data_type == onnx.TensorProto.FLOAT for t in initializers) == 1  # the projection's weight


def test_keep_fp32_leaves_the_named_node_in_float(towers, tmp_path):
    config = default_config("ort-cpu", keep_fp32=["/proj/MatMul"])
    spec = quantize(towers.fp32["text"], "text", config, towers.calibration, tmp_path)
    graph = onnx.load(str(tmp_path / spec.file)).graph
    assert [n.op_type for n in graph.node if n.name == "/proj/MatMul"] == ["MatMul"]
    assert count_ops(tmp_path / spec.file)["QLinearMatMul"] == count_ops(towers.fp32["text"])["MatMul"] - 1
    assert spec.quantization["keep_fp32"] == ["/proj/MatMul"]


def test_keep_fp32_typo_is_an_error(towers, tmp_path):
    with pytest.raises(ConfigError, match=r"keep_fp32 names '/proj/MatMull', which is not a node of the text tower .*Did you mean '/proj/MatMul'"):
        quantize(towers.fp32["text"], "text", default_config("ort-cpu", keep_fp32=["/proj/MatMull"]), None, tmp_path)


def test_scheme_errors_say_what_to_do(towers, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown quantization scheme 'ort-cpuu'\. Did you mean 'ort-cpu'\?"):
        quantize(towers.fp32["image"], "image", default_config("ort-cpuu"), towers.calibration, tmp_path)
    with pytest.raises(ConfigError, match=r"'ort-tensorrt' calibrates the image tower and needs calibration data: pass CalibrationData\.from_dataset"):
        quantize(towers.fp32["image"], "image", default_config("ort-tensorrt"), None, tmp_path)
    with pytest.raises(ConfigError, match=r"ONNX tower to quantize not found: .*missing\.onnx; export it first"):
        quantize(tmp_path / "missing.onnx", "image", default_config("ort-cpu"), None, tmp_path)
    (tmp_path / "text.xml").write_text("<net/>")
    with pytest.raises(ConfigError, match=r"scheme 'ort-cpu' needs an ONNX tower, got text\.xml; pass the exported \.onnx file"):
        quantize(tmp_path / "text.xml", "text", default_config("ort-cpu"), None, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


def test_calibration_with_fewer_samples_than_asked_warns_and_continues(towers, caplog):
    small = Subset(FashionMNIST("test"), range(5), name="five-items")
    with caplog.at_level(logging.WARNING, logger="vledge.compress.quantize.calibration"):
        calibration = CalibrationData.from_dataset(towers.model, small, n=10)
    assert "calibration asked for 10 samples but five-items gave only 5; continuing with 5" in caplog.text
    assert len(calibration.image) == len(calibration.text) == 5


def test_calibration_captions_vary_and_batches_follow_static_shapes(towers):
    calibration = towers.calibration
    texts = {tuple(f["input_ids"][0]) for f in calibration.text}
    assert len(texts) > 20  # 64 captions from distinct templates and classes, not one repeated
    dynamic = calibration.batches("text", 8)
    assert len(dynamic) == 8 and all(b["input_ids"].shape == b["attention_mask"].shape for b in dynamic)
    static = calibration.batches("text", 5, seq_len=16)
    assert len(static) == 12 and {b["input_ids"].shape for b in static} == {(5, 16)}
    assert calibration.batches("image", 8)[0]["pixel_values"].shape == (8, 3, 28, 28)
    reader = calibration.data_reader("image", 16)
    assert sum(1 for _ in iter(reader.get_next, None)) == 4
