"""The self-test on load (runtimes/selftest.py) and per-tower placement (runtimes/towers.py).

Broken towers are the tiny model's exported towers with nodes appended after their output (same
inputs, outputs, names and shapes): one returns a constant for every input, one NaN.
"""

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import vledge
from bundles import build_bundle, exported_towers, sample_images, tiny_model, tiny_probes
from test_runtime import TOLERANCE, TEXTS, reference_images, reference_texts
from vledge.bundle_files import read_manifest
from vledge.errors import BackendUnavailableError, BundleError, ConfigError, SelfTestError
from vledge.runtimes.selftest import MIN_COSINE, spread

pytest.importorskip("onnxruntime")


def broken_tower(src: Path, out: Path, value) -> Path:
    """``src`` with its output replaced by ``output * 0 + value``: one embedding (or NaN) for every input."""
    model = onnx.load(str(src))
    graph = model.graph
    name = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{name}__real" if o == name else o for o in node.output]
    dim = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    const = np.broadcast_to(np.asarray(value, dtype=np.float32), (dim,))
    graph.initializer.extend([
        helper.make_tensor(f"{name}__zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor(f"{name}__const", TensorProto.FLOAT, [dim], const.tolist()),
    ])
    graph.node.extend([
        helper.make_node("Mul", [f"{name}__real", f"{name}__zero"], [f"{name}__zeros"]),
        helper.make_node("Add", [f"{name}__zeros", f"{name}__const"], [name]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def broken_bundle(out: Path, kind: str, value, *, openvino=False, target="cpu") -> Path:
    """A bundle of the tiny model whose ``kind`` tower gives ``value`` for every input (its probes healthy);
    with ``openvino``, of OpenVINO IR towers for intel-cpu."""
    towers = dict(exported_towers(openvino=openvino))
    folder = out.parent / f"{out.name}-towers"
    folder.mkdir(parents=True)
    bad = broken_tower(exported_towers()[kind][1][0], folder / f"{kind}_encoder.onnx", value)
    files = [bad]
    if openvino:
        import openvino as ov

        target, files = "intel-cpu", [bad.with_suffix(".xml"), bad.with_suffix(".bin")]
        ov.save_model(ov.Core().read_model(str(bad)), str(files[0]), compress_to_fp16=False)
    towers[kind] = (towers[kind][0], files)
    return build_bundle(out, target=target, towers=towers)


def mean_reference(kind: str) -> np.ndarray:
    ref = tiny_probes().reference(kind)
    mean = ref.mean(axis=0)
    return mean / np.linalg.norm(mean)


BACKENDS = [
    pytest.param({}, id="onnxruntime-cpu"),
    pytest.param({"openvino": True}, id="openvino-cpu", marks=pytest.mark.skipif(
        __import__("importlib").util.find_spec("openvino") is None, reason="openvino is not installed")),
]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("healthy") / "bundle", target="intel-cpu")


def test_the_probes_are_bundle_files_hashed_and_described(healthy):
    manifest = read_manifest(healthy)
    for name in ("probes/images.npy", "probes/image_embeddings.npy", "probes/texts.json", "probes/text_embeddings.npy"):
        assert name in manifest.files
    assert manifest.probes["image"] == {"inputs": "probes/images.npy", "embeddings": "probes/image_embeddings.npy",
                                        "count": 4, "reference": "fp32 student", "source": "given"}
    images = np.load(healthy / "probes/images.npy")
    assert images.dtype == np.uint8 and images.shape == (4, 28, 28, 3)
    assert np.load(healthy / "probes/text_embeddings.npy").dtype == np.float32
    assert json.loads((healthy / "probes/texts.json").read_text()) == tiny_probes().texts


@pytest.mark.parametrize("extra", BACKENDS)
def test_a_healthy_bundle_passes(tmp_path, extra):
    bundle = build_bundle(tmp_path / "b", target="intel-cpu" if extra else "cpu", **extra)
    info = vledge.load(bundle, exact=True).info() if extra else vledge.load(bundle).info()
    test = info["self_test"]
    assert test["ran"] and test["failures"] == [] and info["warnings"] == []
    for kind in ("image", "text"):
        tower = test["towers"][kind]
        assert tower["passed"] and tower["min_cosine"] > 0.9999 and tower["spread_ratio"] == pytest.approx(1, abs=1e-3)
        assert tower["placement"] == info["placement"] and 0 < tower["seconds"] < 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the unchecked model's inf
@pytest.mark.parametrize("extra", BACKENDS)
@pytest.mark.parametrize("kind, value, said", [
    ("image", 0.25, "near-identical"),  # one embedding for every image (Frigate's CUDA-graph bug)
    ("image", np.nan, "NaN or inf"),
    ("text", np.inf, "NaN or inf"),
])
def test_a_constant_or_nan_tower_is_caught(tmp_path, caplog, extra, kind, value, said):
    bundle = broken_bundle(tmp_path / "b", kind, value, **extra)
    with pytest.raises(SelfTestError, match=rf"the {kind} tower failed its self-test on .*{said}.*strict=True"):
        vledge.load(bundle, strict=True)
    # Nowhere else to go on this chain (an OpenVINO IR bundle, or the cpu target): a named error all the same.
    with caplog.at_level(logging.WARNING, logger="vledge"), pytest.raises(
            SelfTestError, match=rf"{said}.*no other placement is left to try.*self_test=False"):
        vledge.load(bundle)
    skipped = vledge.load(bundle, self_test=False)
    assert skipped.info()["self_test"] == {"ran": False, "reason": "self_test=False"}
    embed = skipped.encode_image(sample_images(3)) if kind == "image" else skipped.encode_text(TEXTS[:3])
    assert not np.isfinite(embed).all() or np.ptp(embed, axis=0).max() == 0  # what the check kept away


def test_a_constant_close_to_every_reference_is_caught_by_the_spread(tmp_path):
    """The tiny text tower's probes lie close together: the mean of their references is within the
    cosine tolerance of each, and only the spread of the outputs tells the tower is broken."""
    mean = mean_reference("text")
    assert (tiny_probes().text_embeddings @ mean).min() > MIN_COSINE
    bundle = broken_bundle(tmp_path / "b", "text", mean)
    with pytest.raises(SelfTestError, match=r"text tower failed .*4 different probes are near-identical \(spread 0\.00"):
        vledge.load(bundle, strict=True)


def test_the_spread_is_the_mean_pairwise_distance():
    e = np.eye(3, dtype=np.float32)
    assert spread(e) == pytest.approx(1.0) and spread(np.ones((4, 2)) / np.sqrt(2)) == pytest.approx(0.0, abs=1e-6)


def test_a_failing_first_placement_falls_back_once_per_tower(healthy, monkeypatch, caplog):
    """intel-cpu's chain is openvino:CPU then onnxruntime:cpu: OpenVINO is made to give one embedding
    for every image, so the image tower moves to ONNX Runtime and the text tower stays."""
    from vledge.runtimes.openvino_backend import OpenVinoRuntime

    real = OpenVinoRuntime.run

    def constant_images(self, kind, feeds):
        out = real(self, kind, feeds)
        return np.ones_like(out) if kind == "image" else out

    monkeypatch.setattr(OpenVinoRuntime, "run", constant_images)
    with caplog.at_level(logging.WARNING, logger="vledge"):
        model = vledge.load(healthy, exact=True)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("the image tower failed its self-test on openvino:CPU: its embeddings of ")
    assert said[0].endswith(". Falling back to onnxruntime:cpu")
    info = model.info()
    assert info["warnings"] == said
    assert info["towers"]["image"]["placement"] == "onnxruntime:cpu" and info["towers"]["text"]["placement"] == "openvino:CPU"
    assert info["placement"] == "onnxruntime:cpu (image) + openvino:CPU (text)"
    assert [f["placement"] for f in info["self_test"]["failures"]] == ["openvino:CPU"]
    assert info["self_test"]["towers"]["image"] == {**info["self_test"]["towers"]["image"], "passed": True,
                                                    "placement": "onnxruntime:cpu"}
    images = sample_images(3)
    np.testing.assert_allclose(model.encode_image(images), reference_images(images), atol=TOLERANCE)
    with pytest.raises(SelfTestError, match=r"image tower failed its self-test on openvino:CPU.*strict=True: not falling"):
        vledge.load(healthy, exact=True, strict=True)


def test_a_fallback_that_cannot_start_moves_on(healthy, monkeypatch, caplog):
    from vledge.runtimes import towers
    from vledge.runtimes.onnxruntime_backend import OnnxRuntime
    from vledge.runtimes.openvino_backend import OpenVinoRuntime

    def nan(self, kind, feeds):
        return np.full((len(next(iter(feeds.values()))), 16), np.nan, np.float32)

    monkeypatch.setattr(OpenVinoRuntime, "run", nan)
    real_open = towers.open_runtime

    def no_ort(bundle, placement, kinds, options, strict, tokenizer=None):
        if placement.backend == "onnxruntime":
            raise BackendUnavailableError("simulated: no ONNX Runtime session")
        return real_open(bundle, placement, kinds, options, strict, tokenizer)

    monkeypatch.setattr("vledge.runtimes.selftest.open_runtime", no_ort)
    assert OnnxRuntime.is_available()
    with caplog.at_level(logging.WARNING, logger="vledge"), pytest.raises(
            SelfTestError, match=r"could not start on onnxruntime:cpu: simulated.*no other placement is left"):
        vledge.load(healthy)


def test_a_bundle_without_probes_loads_unchecked(tmp_path):
    bundle = build_bundle(tmp_path / "old", probes=False)
    assert read_manifest(bundle).probes is None and "probes" not in json.loads((bundle / "vledge.json").read_text())
    info = vledge.load(bundle).info()
    reason = "the bundle records no probes (written by hand, or by a vledge compress from before they were recorded)"
    assert info["self_test"] == {"ran": False, "reason": reason}
    assert info["warnings"] == []


def test_changed_probes_are_refused(healthy, tmp_path):
    import shutil

    copy = Path(shutil.copytree(healthy, tmp_path / "copy"))
    np.save(copy / "probes/image_embeddings.npy", np.zeros((4, 16), np.float32))
    with pytest.raises(BundleError, match=r"bundle file probes/image_embeddings.npy does not match its sha256"):
        vledge.load(copy)


def test_malformed_probes_entry_is_a_bundle_error(healthy, tmp_path):
    import shutil

    copy = Path(shutil.copytree(healthy, tmp_path / "copy"))
    manifest = json.loads((copy / "vledge.json").read_text())
    manifest["probes"]["image"]["inputs"] = 3
    (copy / "vledge.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the manifest's probes entry is malformed; re-run vledge compress"):
        vledge.load(copy)
    manifest["probes"]["image"]["inputs"] = "probes/texts.json"  # hashed, but not images
    (copy / "vledge.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the bundle's image probes cannot be read"):
        vledge.load(copy)


def test_relabelling_keeps_the_probes(tmp_path):
    from vledge.relabel import compile_labels

    bundle = build_bundle(tmp_path / "b")
    compile_labels(bundle, ["bag", "coat"])
    assert read_manifest(bundle).probes["text"]["count"] == 4
    assert vledge.load(bundle).info()["self_test"]["ran"]


# -- per-tower placement ---------------------------------------------------------------------------

def test_image_on_openvino_and_text_on_onnxruntime(healthy):
    pytest.importorskip("openvino")
    model = vledge.load(healthy, device="openvino:CPU", text_device="onnxruntime:cpu", exact=True, threads=1)
    info = model.info()
    assert {k: (t["backend"], t["device"]) for k, t in info["towers"].items()} == {
        "image": ("openvino", "CPU"), "text": ("onnxruntime", "cpu")}
    assert info["placement"] == "openvino:CPU (image) + onnxruntime:cpu (text)" and info["backend"] == "openvino+onnxruntime"
    assert set(info["inference_precision"]) == {"image"} and info["providers"] == ["CPUExecutionProvider"]
    assert info["self_test"]["towers"]["text"]["placement"] == "onnxruntime:cpu" and info["warnings"] == []
    images = sample_images(4, seed=3)
    np.testing.assert_allclose(model.encode_image(images), reference_images(images), atol=TOLERANCE)
    np.testing.assert_allclose(model.encode_text(TEXTS), reference_texts(TEXTS), atol=TOLERANCE)
    assert model.classify(images, ["bag", "coat"], top_k=1)[0].label in ("bag", "coat")
    assert repr(model).endswith("openvino:CPU (image) + onnxruntime:cpu (text), fp32)")
    assert model.runtime.runtimes["image"].manifest.towers.keys() == {"image"}  # each opened only its tower
    same = vledge.load(healthy, image_device="onnxruntime:cpu", text_device="onnxruntime:cpu")
    assert same.info()["placement"] == "onnxruntime:cpu" and same.info()["backend"] == "onnxruntime"


def test_one_tower_moved_by_name(healthy):
    pytest.importorskip("openvino")
    model = vledge.load(healthy, image_device="onnxruntime:cpu", exact=True)  # text: the chain's first, OpenVINO
    assert model.info()["placement"] == "onnxruntime:cpu (image) + openvino:CPU (text)"


def test_an_unreachable_tower_device_falls_back_or_raises_when_strict(tmp_path, caplog):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: nothing to fall back from")
    bundle = build_bundle(tmp_path / "b", target="cuda")
    with caplog.at_level(logging.WARNING, logger="vledge"):
        model = vledge.load(bundle, device="cpu", image_device="cuda")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("the image tower: onnxruntime:cuda is not available here")
    assert said[0].endswith("Falling back to onnxruntime:cpu") and model.info()["placement"] == "onnxruntime:cpu"
    with pytest.raises(BackendUnavailableError, match=r'onnxruntime:cuda is not available.*"vledge\[gpu\]".*strict=True'):
        vledge.load(bundle, device="cpu", image_device="cuda", strict=True)


def test_npu_image_tower_with_the_text_on_the_cpu(tmp_path):
    pytest.importorskip("openvino")
    bundle = build_bundle(tmp_path / "npu", target="intel-npu", openvino=True, static_batch=1, static_seq=16)
    model = vledge.load(bundle, device="NPU", text_device="cpu", exact=True)
    info = model.info()  # no NPU here: the image tower falls back to the CPU, where the text tower was asked
    assert info["placement"] == "openvino:CPU" and len(info["warnings"]) == 1 and "NPU" in info["warnings"][0]
    np.testing.assert_allclose(model.encode_text(TEXTS), reference_texts(TEXTS), atol=TOLERANCE)


def test_per_tower_devices_are_checked(healthy, tmp_path):
    with pytest.raises(ConfigError, match=r"device 'tpu' cannot run this bundle"):
        vledge.load(healthy, text_device="tpu")
    with pytest.raises(ConfigError, match=r"the onnxruntime backend cannot open this bundle's openvino towers"):
        ir = build_bundle(tmp_path / "ir", target="intel-cpu", openvino=True)
        vledge.load(ir, text_device="onnxruntime:cpu")
    from vledge.models import save_dual_encoder

    checkpoint = save_dual_encoder(tiny_model(), tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="image_device and text_device place a bundle's towers"):
        vledge.load(checkpoint, backend="torch", text_device="cpu")
