"""INT8 that holds on every CPU: what a CPU offers, what each INT8 tower records it needs, and the
fallback a CPU without it runs (simulated here by a recorded requirement this test's CPU lacks).

Why the weights must be 7-bit: without VNNI/AMX, x86 U8S8 kernels add two uint8 x int8 products in a
saturating 16-bit sum (vpmaddubsw); |w| <= 64 keeps every pair within 2 * 255 * 64 = 32,640.
"""

import logging
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import vledge
from vledge.bundle import TowerSpec
from vledge.bundle_files import read_manifest
from vledge.compress.export import tower_files
from vledge.compress.quantize import CalibrationData, default_config, quantize
from vledge.cpu import CpuInfo, host_cpu, parse_cpuinfo
from vledge.data.fashion_mnist import DEFAULT_DIR, FashionMNIST
from vledge.errors import BackendUnavailableError, ConfigError
from vledge.runtimes.isa import choose_tower_file

from bundles import build_bundle, exported_towers, tiny_model

needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason="Fashion-MNIST is not installed")

AVX2_ONLY = CpuInfo("AMD EPYC (simulated AVX2-only)", "x86_64", frozenset({"avx2", "fma", "sse4_2"}))
VNNI_CPU = CpuInfo("Intel Xeon (simulated)", "x86_64", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))


def test_cpuinfo_is_parsed_for_x86_and_arm():
    x86 = parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma avx512_vnni\n", "x86_64")
    assert x86.model == "AMD EPYC 7B13" and x86.has("vnni") and x86.isa == ["avx2", "fma", "avx512_vnni"]
    amx = parse_cpuinfo("model name : Xeon\nflags : avx2 amx_int8 amx_bf16\n", "x86_64")
    assert amx.has("vnni") and "exact 8-bit" in amx.int8_note()
    avx2 = parse_cpuinfo("model name : Old\nflags : avx2 fma avx512f avx512bw\n", "x86_64")
    assert not avx2.has("vnni") and avx2.missing(["vnni"]) == ["vnni"]
    assert "saturate with 8-bit weights" in avx2.int8_note()  # AVX-512 without VNNI saturates too
    arm = parse_cpuinfo("processor : 0\nFeatures : fp asimd asimddp\n", "aarch64")
    assert arm.has("vnni") and arm.isa == ["asimd", "asimddp"] and arm.model == "aarch64"
    assert not x86.has("avx10") and x86.missing(["avx10"]) == ["avx10"]  # an unknown requirement is never met


@pytest.mark.parametrize("scheme,name", [("ort-cpu", "OrtCpuConfig"), ("nncf", "NncfCpuConfig")])
def test_weight_bits_is_validated(scheme, name):
    assert default_config(scheme).weight_bits == 7
    for bad in (6, 8.0, True, "7"):
        with pytest.raises(ConfigError, match=rf"{name}\.weight_bits must be 7 \(exact on every CPU\) or 8"):
            default_config(scheme, weight_bits=bad)


def test_a_tower_spec_written_before_requirements_is_read_as_needing_vnni():
    base = {"file": "image_encoder.onnx", "format": "onnx", "precision": "int8", "inputs": [], "outputs": []}
    assert TowerSpec.from_dict(base).requires_isa == ["vnni"]
    assert TowerSpec.from_dict({**base, "quantization": {"weight_bits": 7}}).requires_isa == []
    assert TowerSpec.from_dict({**base, "quantization": {"method": "weights-only"}}).requires_isa == []
    assert TowerSpec.from_dict({**base, "precision": "fp32"}).requires_isa == []


@pytest.mark.parametrize("fallback,expected_file,float_qdq,said", [
    ({"file": "image_encoder.7bit.onnx", "reason": "7-bit"}, "image_encoder.7bit.onnx", False, "running its fallback"),
    ({"float_qdq": True}, "image_encoder.onnx", True, "integer ops in float"),
    (None, "image_encoder.onnx", False, "has no fallback for it: its embeddings may be wrong here"),
])
def test_a_cpu_without_the_recorded_requirement_gets_the_fallback(fallback, expected_file, float_qdq, said):
    spec = TowerSpec("image_encoder.onnx", "onnx", "int8", [], [], requires_isa=["vnni"], fallback=fallback)
    choice = choose_tower_file("image", spec, on_cpu=True, strict=False, cpu=AVX2_ONLY)
    assert (choice.file, choice.float_qdq) == (expected_file, float_qdq) and said in choice.warning
    assert "needs vnni" in choice.warning and "simulated AVX2-only" in choice.warning
    assert choose_tower_file("image", spec, True, False, cpu=VNNI_CPU).file == "image_encoder.onnx"
    assert choose_tower_file("image", spec, on_cpu=False, strict=True, cpu=AVX2_ONLY).warning is None  # a GPU
    with pytest.raises(BackendUnavailableError, match=r"image tower image_encoder\.onnx needs vnni .* strict=True: not falling back"):
        choose_tower_file("image", spec, True, True, cpu=AVX2_ONLY)


@pytest.fixture(scope="module")
def calibration():
    return CalibrationData.from_dataset(tiny_model(), FashionMNIST("train"), 32, seed=0)


def int8_weights(path):
    """The int8 weight tensors of a quantized ONNX graph."""
    graph = onnx.load(str(path)).graph
    return [a for a in (numpy_helper.to_array(t) for t in graph.initializer) if a.dtype == np.int8 and a.size > 16]


@needs_data
@pytest.mark.parametrize("kind", ["image", "text"])
def test_ort_cpu_default_weights_are_7_bit_and_need_nothing(calibration, tmp_path, kind):
    spec, (fp32,) = exported_towers()[kind]
    q = quantize(fp32, kind, default_config("ort-cpu"), calibration, tmp_path)
    weights = int8_weights(tmp_path / q.file)
    assert weights and max(int(np.abs(w.astype(int)).max()) for w in weights) <= 64
    assert q.requires_isa == [] and q.fallback is None and q.quantization["weight_bits"] == 7
    assert not list(tmp_path.glob("*.7bit.*"))


@needs_data
def test_ort_cpu_8_bit_weights_record_vnni_and_carry_a_7_bit_fallback(calibration, tmp_path):
    spec, (fp32,) = exported_towers()["image"]
    q = quantize(fp32, "image", default_config("ort-cpu", weight_bits=8), calibration, tmp_path)
    assert q.requires_isa == ["vnni"] and q.fallback["file"] == "image_encoder.7bit.onnx"
    assert max(int(np.abs(w.astype(int)).max()) for w in int8_weights(tmp_path / q.file)) > 64
    assert max(int(np.abs(w.astype(int)).max()) for w in int8_weights(tmp_path / q.fallback["file"])) <= 64
    assert q.fallback["cosine_to_fp32"]["mean"] >= 0.99  # measured 0.9995 on this tiny ViT
    assert tower_files(tmp_path, q) == [tmp_path / "image_encoder.onnx", tmp_path / "image_encoder.7bit.onnx"]


@needs_data
def test_tensorrt_towers_keep_8_bits_and_fall_back_to_float_qdq_on_a_cpu(calibration, tmp_path):
    spec, (fp32,) = exported_towers()["text"]
    q = quantize(fp32, "text", default_config("ort-tensorrt"), calibration, tmp_path)
    assert q.quantization["weight_bits"] == 8 and q.requires_isa == ["vnni"] and q.fallback["float_qdq"] is True
    assert q.quantization["cosine_to_fp32"]["min"] >= 0.999  # checked with integer ops in float: any CPU


def quantized_bundle(out, calibration, scheme, target, **settings):
    fp32 = exported_towers()
    towers = {}
    for kind in ("image", "text"):
        config = default_config(scheme, **settings)
        spec = quantize(fp32[kind][1][0], kind, config, calibration, out.parent / f"q-{out.name}")
        towers[kind] = (spec, tower_files(out.parent / f"q-{out.name}", spec))
    return build_bundle(out, target=target, towers=towers)


def cosines(a, b):
    return (a * b).sum(1)


@needs_data
@pytest.mark.parametrize("scheme,target,run_file", [
    ("ort-cpu", "cpu", "image_encoder.7bit.onnx"),
    ("nncf", "intel-cpu", "image_encoder.7bit.xml"),
])
def test_a_bundle_verified_on_a_vnni_cpu_loads_its_fallback_on_an_avx2_one(
        calibration, tmp_path, monkeypatch, caplog, scheme, target, run_file):
    bundle = quantized_bundle(tmp_path / "b", calibration, scheme, target, weight_bits=8)
    manifest = read_manifest(bundle)
    assert manifest.towers["image"].fallback["file"] == run_file and run_file in manifest.files
    images = list(FashionMNIST("test").pixels[:16])
    exact = {"exact": True} if scheme == "nncf" else {}  # OpenVINO: f32 inference, not this CPU's bf16
    monkeypatch.setattr("vledge.runtimes.isa.host_cpu", lambda: VNNI_CPU)
    on_vnni = vledge.load(bundle, device="cpu", **exact)
    assert on_vnni.info()["towers"]["image"]["runs"]["file"] == run_file.replace(".7bit", "")
    assert on_vnni.info()["warnings"] == []
    monkeypatch.setattr("vledge.runtimes.isa.host_cpu", lambda: AVX2_ONLY)
    with caplog.at_level(logging.WARNING):
        on_avx2 = vledge.load(bundle, device="cpu", **exact)
    info = on_avx2.info()
    assert info["towers"]["image"]["runs"]["file"] == run_file and info["towers"]["image"]["requires_isa"] == ["vnni"]
    assert any("running its fallback" in w for w in info["warnings"]) and "running its fallback" in caplog.text
    # The fallback keeps the FP32 tower's embeddings on this CPU, whatever it is; the 8-bit file does only
    # where its integer kernels are exact. Bounds as test_quantize / test_openvino_export set them for this
    # tiny ViT (worst measured here: ORT 0.999, NNCF 0.987).
    fp32 = vledge.load(build_bundle(tmp_path / "fp32", target=target), device="cpu", **exact)
    worst = 0.97 if scheme == "nncf" else 0.99
    for model in [on_avx2] + ([on_vnni] if host_cpu().has("vnni") else []):
        cos = cosines(fp32.encode_image(images), model.encode_image(images))
        assert cos.mean() > 0.99 and cos.min() > worst, (cos.mean(), cos.min())
    with pytest.raises(BackendUnavailableError, match="needs vnni .* strict=True: not falling back"):
        vledge.load(bundle, device="cpu", strict=True)


@needs_data
def test_a_jetson_bundle_on_an_avx2_cpu_runs_its_qdq_graph_in_float(calibration, tmp_path, monkeypatch):
    from vledge.compress.quantize.tools import ort_runner

    bundle = quantized_bundle(tmp_path / "j", calibration, "ort-tensorrt", "jetson")
    monkeypatch.setattr("vledge.runtimes.isa.host_cpu", lambda: AVX2_ONLY)
    model = vledge.load(bundle, device="cpu")
    assert model.info()["towers"]["text"]["runs"] == {"file": "text_encoder.onnx", "float_qdq": True}
    feed = calibration.batches("text", 8)[0]
    expected = ort_runner(bundle / "text_encoder.onnx", float_qdq=True)(feed)
    got = model.runtime.run("text", feed)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_flags_this_process_cannot_execute_are_dropped(monkeypatch):
    """Under QEMU's -cpu, /proc/cpuinfo is the host's: numpy's own CPUID probe has the last word."""
    from numpy._core._multiarray_umath import __cpu_features__

    from vledge.cpu import host_cpu

    monkeypatch.setitem(__cpu_features__, "AVX512VNNI", False)
    monkeypatch.setitem(__cpu_features__, "AVX2", True)
    cpu = host_cpu.__wrapped__()
    assert "avx512_vnni" not in cpu.flags and ("avx2" in cpu.flags) == ("avx2" in host_cpu().flags)
