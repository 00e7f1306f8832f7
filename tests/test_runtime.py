"""One conformance suite every runtime backend passes, plus each backend's own behaviour.

Parity tolerance: 1e-5 max abs difference per embedding component against the PyTorch model (FP32 towers;
measured here: ONNX Runtime ~4e-7, OpenVINO f32 ~3e-7, torch 0).
"""

import logging
import threading

import numpy as np
import pytest
from PIL import Image

import vledge
from bundles import LABEL_NAMES, build_bundle, compiled_labels, sample_images, tiny_model
from vledge.errors import BackendUnavailableError, ConfigError
from vledge.images import preprocess

TOLERANCE = 1e-5
TEXTS = ["a photo of a bag.", "a picture of a sneaker.", "an emoji 🙂 and ümlauts", "x", "a black and white photo of a coat.",
         "a close-up photo of the trouser, which is long enough to be cut at the tokenizer's maximum length of sixteen"]


def reference_images(images):
    model = tiny_model()
    return model.encode_image(model.pixels(images)).detach().numpy()


def reference_texts(texts):
    return tiny_model().embed_texts(texts)


def reference_probs(images, label_embeddings):
    logits = float(tiny_model().logit_scale.detach().exp()) * reference_images(images) @ label_embeddings.T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class RuntimeConformance:
    """Subclasses give ``framework`` (skipped when absent), ``backend`` and ``open`` / ``open_static``."""

    framework: str
    backend: str
    static_batch = 4

    def open(self, tmp_path_factory):
        raise NotImplementedError

    def open_static(self, tmp_path_factory):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def model(self, tmp_path_factory):
        pytest.importorskip(self.framework, reason=f"{self.framework} is not installed")
        return self.open(tmp_path_factory)

    @pytest.fixture(scope="class")
    def static_model(self, tmp_path_factory):
        pytest.importorskip(self.framework, reason=f"{self.framework} is not installed")
        return self.open_static(tmp_path_factory)

    def test_info_names_backend(self, model):
        info = model.info()
        assert info["backend"] == self.backend
        assert info["placement"].startswith(self.backend + ":")
        assert info["load_seconds"] > 0

    def test_shapes_dtypes_and_norms(self, model):
        for emb, n in ((model.encode_image(sample_images(3)), 3), (model.encode_text(TEXTS), len(TEXTS))):
            assert emb.shape == (n, 16) and emb.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)

    def test_parity_with_pytorch(self, model):
        images = sample_images(5)
        np.testing.assert_allclose(model.encode_image(images), reference_images(images), atol=TOLERANCE)
        np.testing.assert_allclose(model.encode_text(TEXTS), reference_texts(TEXTS), atol=TOLERANCE)

    def test_preprocessed_pixels(self, model):
        images = sample_images(3, seed=10)
        pixels = preprocess(images, model.manifest.preprocess)
        np.testing.assert_allclose(model.encode_pixels(pixels, batch_size=2), reference_images(images), atol=TOLERANCE)

    def test_batch_of_one_matches_batch_of_n(self, model):
        images = sample_images(4, seed=1)
        batch = model.encode_image(images)
        singles = np.concatenate([model.encode_image(im) for im in images])
        np.testing.assert_allclose(singles, batch, atol=TOLERANCE)
        np.testing.assert_allclose(np.concatenate([model.encode_text(t) for t in TEXTS]), model.encode_text(TEXTS), atol=TOLERANCE)

    def test_repeated_calls_are_identical(self, model):
        images = sample_images(3, seed=2)
        assert np.array_equal(model.encode_image(images), model.encode_image(images))
        assert np.array_equal(model.encode_text(TEXTS), model.encode_text(TEXTS))

    def test_image_input_kinds(self, model, tmp_path):
        pixels = sample_images(1, seed=3)[0]
        path = tmp_path / "frame.png"
        Image.fromarray(pixels).save(path)
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
        embs = [model.encode_image(x) for x in (pixels, rgb, Image.fromarray(pixels), path, str(path))]
        for emb in embs:
            np.testing.assert_allclose(emb, embs[0], atol=1e-6)

    def test_more_inputs_than_a_static_batch(self, static_model):
        images = sample_images(2 * self.static_batch + 1, seed=4)  # two full chunks and one padded
        assert static_model.info()["towers"]["image"]["inputs"]["pixel_values"][0] == self.static_batch
        np.testing.assert_allclose(static_model.encode_image(images), reference_images(images), atol=TOLERANCE)
        np.testing.assert_allclose(static_model.encode_text(TEXTS), reference_texts(TEXTS), atol=TOLERANCE)
        np.testing.assert_allclose(static_model.encode_image(images[0]), reference_images(images[:1]), atol=TOLERANCE)

    def test_read_only_and_strided_pixels(self, model):
        pixels = preprocess(sample_images(2, seed=8), model.manifest.preprocess)
        expected = model.encode_pixels(pixels.copy())
        read_only = pixels.copy()
        read_only.setflags(write=False)
        for given in (read_only, np.asfortranarray(pixels), pixels[:, :, ::-1, ::-1][:, :, ::-1, ::-1]):
            np.testing.assert_allclose(model.encode_pixels(given), expected, atol=1e-6)

    def test_classify_with_labels(self, model):
        images = sample_images(3, seed=5)
        labels = ["t-shirt", "bag", "sneaker"]
        got = model.classify(images, labels, top_k=3, templates=["{}"])
        expected = reference_probs(images, reference_texts(labels))
        assert len(got) == len(expected) == 3
        for row, probs in zip((prediction.top for prediction in got), expected):
            assert [p for _, p in row] == sorted((p for _, p in row), reverse=True)
            assert sum(p for _, p in row) == pytest.approx(1.0, abs=1e-5)
            for label, p in row:
                assert p == pytest.approx(probs[labels.index(label)], abs=1e-5)
        assert [len(r.top) for r in model.classify(images, labels, top_k=2)] == [2, 2, 2]

    def test_classify_with_the_compiled_label_set(self, model):
        names, templates = model.label_set.names, model.label_set.templates
        images = sample_images(2, seed=6)
        expected = reference_probs(images, compiled_labels(tiny_model(), names, templates)["embeddings"])
        got = model.classify(images, top_k=len(names))
        assert len(got) == len(expected) == 2
        for row, probs in zip((prediction.top for prediction in got), expected):
            assert row[0][0] == names[int(np.argmax(probs))]
            assert {label: p for label, p in row} == pytest.approx(dict(zip(names, probs.tolist())), abs=1e-5)

    def test_the_compiled_labels_given_by_name_encode_no_text(self, model, monkeypatch):
        if model.label_set.embeddings is None:
            pytest.skip("a checkpoint's label set has no embeddings until its first use")
        names, templates = model.label_set.names, model.label_set.templates
        images = sample_images(2, seed=6)
        towers_run = []
        real_run = model.runtime.run
        monkeypatch.setattr(model.runtime, "run", lambda kind, feeds: towers_run.append(kind) or real_run(kind, feeds))
        assert model.classify(images, list(names)) == model.classify(images)
        assert model.classify(images, list(names), templates=templates) == model.classify(images)
        assert "text" not in towers_run
        model.classify(images, list(names), templates=["{}"])  # other prompts: the labels are encoded
        assert "text" in towers_run

    def test_classify_label_errors(self, model, caplog):
        with pytest.raises(ConfigError, match="labels is empty; pass at least one label"):
            model.classify(sample_images(1), [])
        with pytest.raises(ConfigError, match=r"labels must be a list of strings, e.g. \['cat', 'dog'\]"):
            model.classify(sample_images(1), "bag")
        with caplog.at_level(logging.WARNING):
            result = model.classify(sample_images(1), ["bag", "coat", "bag"], top_k=5)
        assert [label for label, _ in result[0].top].count("bag") == 1 and len(result[0].top) == 2
        assert "duplicate labels dropped (first kept): 3 given, 2 distinct" in caplog.text

    def test_threads_match_single_thread(self, model):
        images = sample_images(4, seed=7)
        labels = ["bag", "sneaker", "coat"]
        expected = [model.classify(im, labels) for im in images]
        results, errors = {}, []

        def work(worker):
            try:
                results[worker] = [model.classify(images[(worker + i) % 4], labels) for i in range(50)]
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for worker, got in results.items():
            for i, result in enumerate(got):
                assert result == expected[(worker + i) % 4]


class TestOnnxRuntimeCPU(RuntimeConformance):
    framework = backend = "onnxruntime"

    def open(self, tmp_path_factory):
        return vledge.load(build_bundle(tmp_path_factory.mktemp("ort") / "bundle"), threads=1)

    def open_static(self, tmp_path_factory):
        return vledge.load(build_bundle(tmp_path_factory.mktemp("ort-static") / "bundle", static_batch=self.static_batch,
                                        static_seq=16, labels=False))

    def test_no_labels_and_no_label_set(self, static_model):
        with pytest.raises(ConfigError, match=r"no labels given and this bundle has no compiled label set; pass labels="):
            static_model.classify(sample_images(1))

    def test_small_cpu_towers_run_on_one_thread_unless_threads_are_given(self, model, monkeypatch):
        from vledge.runtimes import onnxruntime_backend

        def threads(**options):
            runtime = vledge.load(model.info()["path"], **options).runtime
            assert {k: s.get_session_options().intra_op_num_threads for k, s in runtime._sessions.items()} == \
                {k: 0 if v == "onnxruntime's default" else v for k, v in runtime.info()["intra_op_threads"].items()}
            return runtime.info()["intra_op_threads"]

        assert threads() == {"image": 1, "text": 1}  # the tiny test towers
        assert threads(threads=2) == {"image": 2, "text": 2}
        monkeypatch.setattr(onnxruntime_backend, "SMALL_TOWER_BYTES", 0)
        assert threads() == {"image": "onnxruntime's default", "text": "onnxruntime's default"}

    def test_unknown_option_suggests(self, model):
        with pytest.raises(ConfigError, match=r"unknown option 'thread' for the onnxruntime runtime. Did you mean 'threads'\?"):
            vledge.load(model.info()["path"], thread=2)

    def test_unreachable_gpu_falls_back_once_or_raises_when_strict(self, tmp_path_factory, caplog):
        import onnxruntime

        if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this machine has TensorRT: nothing to fall back from")
        bundle = build_bundle(tmp_path_factory.mktemp("jetson") / "bundle", target="jetson")
        with caplog.at_level(logging.WARNING, logger="vledge"):
            model = vledge.load(bundle)
        assert len(caplog.records) == 1
        assert caplog.records[0].getMessage().startswith("onnxruntime:tensorrt is not available here")
        assert model.info()["placement"] in ("onnxruntime:cpu", "onnxruntime:cuda")
        with pytest.raises(BackendUnavailableError, match=r'pip install "vledge\[gpu\]".*strict=True: not falling back'):
            vledge.load(bundle, strict=True)

    def test_text_only_request_on_missing_tower(self, tmp_path):
        import json

        bundle = build_bundle(tmp_path / "bundle")
        manifest = json.loads((bundle / "vledge.json").read_text())
        del manifest["towers"]["text"]
        (bundle / "vledge.json").write_text(json.dumps(manifest))
        model = vledge.load(bundle)
        assert model.classify(sample_images(1), top_k=1)[0].label in LABEL_NAMES  # compiled labels: image tower only
        with pytest.raises(ConfigError, match=r"this bundle has no text tower \(it has: image\)"):
            model.encode_text("a bag")


class TestOpenVinoCPU(RuntimeConformance):
    framework = backend = "openvino"

    def open(self, tmp_path_factory):
        bundle = build_bundle(tmp_path_factory.mktemp("ov") / "bundle", target="intel-cpu", openvino=True)
        return vledge.load(bundle, exact=True, threads=1)

    def open_static(self, tmp_path_factory):
        bundle = build_bundle(tmp_path_factory.mktemp("ov-static") / "bundle", target="intel-npu", openvino=True,
                              static_batch=self.static_batch, static_seq=16)
        return vledge.load(bundle, device="CPU", exact=True, threads=1)

    def test_exact_runs_f32(self, model):
        assert set(model.info()["inference_precision"].values()) == {"f32"}

    def test_npu_target_falls_back_to_cpu(self, static_model, caplog):
        with caplog.at_level(logging.WARNING, logger="vledge"):
            model = vledge.load(static_model.info()["path"], exact=True)
        assert model.info()["placement"] == "openvino:CPU"
        assert [r.getMessage() for r in caplog.records] == [
            'openvino:NPU is not available here: openvino sees no NPU device (it has: CPU); to use it: '
            'pip install "vledge[openvino]" (the Intel NPU driver). Falling back to openvino:CPU']
        with pytest.raises(BackendUnavailableError, match="openvino sees no NPU device"):
            vledge.load(static_model.info()["path"], device="npu", strict=True)

    def test_dynamic_bundle_fixed_to_a_static_batch(self, model):
        fixed = vledge.load(model.info()["path"], exact=True, threads=1, static_batch=3)
        shapes = fixed.info()["towers"]
        assert shapes["image"]["inputs"] == {"pixel_values": [3, 3, 28, 28]}
        assert shapes["text"]["inputs"] == {"input_ids": [3, 16], "attention_mask": [3, 16]}
        images = sample_images(7, seed=8)
        np.testing.assert_allclose(fixed.encode_image(images), reference_images(images), atol=TOLERANCE)
        np.testing.assert_allclose(fixed.encode_text(TEXTS), reference_texts(TEXTS), atol=TOLERANCE)

    def test_openvino_runs_an_onnx_bundle_when_asked(self, tmp_path):
        model = vledge.load(build_bundle(tmp_path / "bundle"), backend="openvino", exact=True, threads=1)
        assert model.info()["placement"] == "openvino:CPU"
        images = sample_images(3, seed=9)
        np.testing.assert_allclose(model.encode_image(images), reference_images(images), atol=TOLERANCE)

    def test_onnxruntime_cannot_open_ir(self, model):
        with pytest.raises(ConfigError, match=r"the onnxruntime backend cannot open this bundle's openvino towers"):
            vledge.load(model.info()["path"], backend="onnxruntime")


class TestTorch(RuntimeConformance):
    framework = backend = "torch"

    def open(self, tmp_path_factory):
        from vledge.models import save_dual_encoder

        folder = save_dual_encoder(tiny_model(), tmp_path_factory.mktemp("ckpt") / "teacher")
        return vledge.load(folder, backend="torch")

    def test_more_inputs_than_a_static_batch(self):
        pytest.skip("PyTorch checkpoints have dynamic shapes")

    def test_checkpoint_label_set(self, model):
        assert model.label_set.names[:2] == list(tiny_model().labels["classes"][:2])
        assert model.label_set.embeddings is None  # made from the templates on first use


@pytest.mark.gpu
@pytest.mark.parametrize("device, provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_onnxruntime_gpu(device, provider, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if provider not in ort.get_available_providers():
        pytest.skip(f"ONNX Runtime here has no {provider} (needs onnxruntime-gpu)")
    bundle = build_bundle(tmp_path / "bundle", target="jetson")
    model = vledge.load(bundle, device=device, strict=True, trt_cache_dir=tmp_path / "trt")
    assert model.info()["providers"][0] == provider
    images = sample_images(5)
    # TensorRT runs FP16 (trt_fp16_enable): compare normalised embeddings loosely.
    np.testing.assert_allclose(model.encode_image(images), reference_images(images), atol=1e-2)
    np.testing.assert_allclose(model.encode_text(TEXTS), reference_texts(TEXTS), atol=1e-2)
    if device == "tensorrt":
        assert any((tmp_path / "trt").iterdir()), "TensorRT wrote no engine cache"
