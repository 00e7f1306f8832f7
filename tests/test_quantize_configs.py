"""Quantization scheme configs: one type per scheme, validated on creation, JSON round trips, dispatch by
type, the names the targets table uses, and configs written before per-scheme configs existed."""

import json
from dataclasses import dataclass, fields

import pytest

import vledge
from vledge.bundle_files import read_manifest
from vledge.compress import quantize as q
from vledge.compress.config import CompressConfig, resolve_config
from vledge.errors import ConfigError
from vledge.targets import TARGETS

# A non-default value for each field, so a round trip that dropped or reset one would show.
CHANGED = {
    "calibration_samples": 200, "keep_fp32": ["/a/MatMul"], "calibration_batch": 4, "per_channel": False,
    "image_op_types": ["Conv"], "text_op_types": ["MatMul"], "ort_cpu_format": {"image": "dynamic", "text": "static"},
    "cpu_preset": "avx2", "weight_bits": 8, "weights_only": True,
}
# What every version-1 (flat, shared by all schemes) QuantizeConfig.to_dict() wrote at its defaults.
FLAT_V1 = {
    "version": 1, "calibration_samples": 128, "calibration_batch": 8, "per_channel": True, "image_op_types": None,
    "text_op_types": None, "keep_fp32": [], "ort_cpu_format": {"image": "auto", "text": "auto"}, "cpu_preset": "auto",
    "weights_only": False, "weight_bits": 7,
}


def test_every_target_names_a_registered_scheme():
    names = q.scheme_names()
    assert names == ["fp16", "nncf", "nncf-symmetric", "ort-cpu", "ort-tensorrt"]
    assert {t.quantization for _, t in TARGETS.items()} == set(names)


@pytest.mark.parametrize("scheme", ["fp16", "nncf", "nncf-symmetric", "ort-cpu", "ort-tensorrt"])
def test_each_scheme_config_round_trips_through_json_with_only_its_fields(scheme):
    config_type = q.schemes()[scheme]
    names = [f.name for f in fields(config_type)]
    config = q.default_config(scheme, **{k: CHANGED[k] for k in names})
    data = json.loads(json.dumps(config.to_dict()))
    assert data["scheme"] == scheme and data["version"] == 2 and set(data) == {"scheme", "version", *names}
    again = q.config_from_dict(data)
    assert type(again) is config_type and again == config and again != q.default_config(scheme)


def test_configs_are_importable_by_class_name_and_each_has_its_own_type():
    assert q.OrtCpuConfig().scheme == "ort-cpu" and q.NncfSymmetricConfig().scheme == "nncf-symmetric"
    assert len({type(q.default_config(n)) for n in q.scheme_names()}) == 5
    assert "weights_only" not in {f.name for f in fields(q.OrtCpuConfig)}
    assert "ort_cpu_format" not in {f.name for f in fields(q.NncfCpuConfig)}
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchConfig'"):
        q.NoSuchConfig


def test_the_handler_is_chosen_by_the_config_type(tmp_path):
    @dataclass
    class Unregistered(q.SchemeConfig):
        scheme = "ort-cpu"

    (tmp_path / "t.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no quantization handler is registered for Unregistered; pass the config of a scheme"):
        q.quantize(tmp_path / "t.onnx", "text", Unregistered(), None, tmp_path)
    with pytest.raises(ConfigError, match=r"quantize needs a scheme's config such as default_config\('ort-cpu'\), got 'ort-cpu'"):
        q.quantize(tmp_path / "t.onnx", "text", "ort-cpu", None, tmp_path)


def test_unknown_scheme_names_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown quantization scheme 'ort-cpuu'\. Did you mean 'ort-cpu'\?"):
        q.default_config("ort-cpuu")
    with pytest.raises(ConfigError, match=r"this quantize config names no scheme; add \"scheme\": one of fp16, nncf"):
        q.config_from_dict({"calibration_samples": 3})


@pytest.mark.parametrize("scheme,kwargs,message", [
    ("ort-cpu", {"calibration_samples": 0}, r"OrtCpuConfig\.calibration_samples must be a positive integer, got 0"),
    ("ort-cpu", {"ort_cpu_format": {"image": "statc"}}, r"OrtCpuConfig\.ort_cpu_format\['image'\] must be one of auto, static, dynamic; got 'statc'\. Did you mean 'static'\?"),
    ("ort-tensorrt", {"text_op_types": []}, r"OrtTensorRTConfig\.text_op_types is empty: give op types such as \['MatMul'\], or null for the default"),
    ("fp16", {"keep_fp32": "/proj/MatMul"}, r"Fp16Config\.keep_fp32 must be a list of names, got '/proj/MatMul'"),
    ("ort-cpu", {"cpu_preset": "avx9"}, r"OrtCpuConfig\.cpu_preset must be one of auto, avx512_vnni, avx2, arm64; got 'avx9'"),
    ("nncf", {"weights_only": 1}, r"NncfCpuConfig\.weights_only must be true or false, got 1"),
    ("nncf-symmetric", {"calibration_batch": 0}, r"NncfSymmetricConfig\.calibration_batch must be a positive integer, got 0"),
])
def test_validation_messages(scheme, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        q.default_config(scheme, **kwargs)


def test_keys_are_checked_with_a_suggestion_or_the_schemes_that_read_them():
    with pytest.raises(ConfigError, match=r"OrtCpuConfig \(scheme 'ort-cpu'\): unknown key 'per_chanel'\. Did you mean 'per_channel'\?"):
        q.config_from_dict({"scheme": "ort-cpu", "per_chanel": True})
    with pytest.raises(ConfigError, match=r"OrtCpuConfig \(scheme 'ort-cpu'\) does not read 'weights_only'; schemes that do: nncf, nncf-symmetric"):
        q.config_from_dict({"scheme": "ort-cpu", "weights_only": True})
    with pytest.raises(ConfigError, match=r"OrtCpuConfig version 3 is not supported \(this vledge reads 1 and 2\)"):
        q.config_from_dict({"scheme": "ort-cpu", "version": 3})


@pytest.mark.parametrize("target", ["cpu", "intel-cpu", "intel-npu", "cuda", "jetson"])
def test_a_flat_version_1_config_reads_as_the_targets_scheme(target):
    scheme = TARGETS.get(target).quantization
    old = {**FLAT_V1, "calibration_samples": 64}
    config = CompressConfig.from_dict({"target": target, "quantize": old}).quantize
    assert config == q.default_config(scheme, calibration_samples=64)
    assert resolve_config(target, overrides={"quantize": old}).quantize == config


def test_a_flat_version_1_setting_the_scheme_cannot_honour_raises():
    with pytest.raises(ConfigError, match=r"a version-1 quantize config sets weights_only=True, which scheme 'ort-cpu' does not read \(it had no effect\); remove it"):
        CompressConfig.from_dict({"target": "cpu", "quantize": {**FLAT_V1, "weights_only": True}})
    kept = CompressConfig.from_dict({"target": "intel-cpu", "quantize": {**FLAT_V1, "weights_only": True}}).quantize
    assert kept == q.NncfCpuConfig(weights_only=True)


def test_compress_config_holds_the_targets_scheme_config_and_round_trips():
    config = resolve_config("intel-cpu", overrides={"quantize": {"weight_bits": 8}})
    assert config.quantize == q.NncfCpuConfig(weight_bits=8)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["quantize"]["scheme"] == "nncf" and CompressConfig.from_dict(data) == config
    assert CompressConfig(target="cuda").quantize == q.Fp16Config()
    with pytest.raises(ConfigError, match=r"the target quantizes with scheme 'ort-cpu', but CompressConfig\.quantize is a 'nncf' config"):
        CompressConfig(target="cpu", quantize=q.NncfCpuConfig())
    with pytest.raises(ConfigError, match=r"the target quantizes with scheme 'nncf', but CompressConfig\.quantize is a 'ort-cpu' config"):
        resolve_config("intel-cpu", overrides={"quantize": {"scheme": "ort-cpu"}})
    with pytest.raises(ConfigError, match=r"NncfCpuConfig is the config of scheme 'nncf', got one for 'ort-cpu'"):
        q.NncfCpuConfig.from_dict({"scheme": "ort-cpu"})


def test_a_bundle_whose_config_holds_a_flat_quantize_dict_still_loads(tmp_path):
    from bundles import build_bundle, edit_manifest, rehash

    bundle = build_bundle(tmp_path / "old")
    old = {**CompressConfig().to_dict(), "quantize": FLAT_V1}
    edit_manifest(bundle, lambda data: data.update(config=old))
    rehash(bundle)
    model = vledge.load(bundle, device="cpu")
    assert model.encode_text(["a photo of a coat"]).shape[0] == 1
    recorded = read_manifest(bundle).config
    assert recorded["quantize"] == FLAT_V1 and CompressConfig.from_dict(recorded).quantize == q.OrtCpuConfig()
