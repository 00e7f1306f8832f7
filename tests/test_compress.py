"""The whole pipeline on a tiny Hugging Face CLIP teacher: every target yields a valid bundle."""

import json

import numpy as np
import pytest

from tiny_clip import make_tiny_clip_folder
from vledge.bundle_files import read_manifest
from vledge.compress import compress, resolve_config
from vledge.errors import BundleError, ConfigError

FAST = {
    "data": "digits",
    "distill": {"epochs": 1, "batch_size": 64, "max_samples": 256, "patience": None},
    "quantize": {"calibration_samples": 32},
    "eval_samples": 96,
    "tolerance": 0.99,  # a random teacher: this checks the bundles, not accuracy
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_tiny_clip_folder(tmp_path_factory.mktemp("clip") / "teacher")


@pytest.fixture(scope="module")
def bundles(teacher, tmp_path_factory):
    """One compress per target, sharing one work folder so the distilled student is reused."""
    root = tmp_path_factory.mktemp("bundles")
    reports = {}
    for i, target in enumerate(["cpu", "intel-cpu", "intel-npu", "cuda", "jetson"]):
        config = resolve_config(target, overrides=FAST)
        reports[target] = compress(teacher, out=root / target, config=config, work_dir=root / "work",
                                   resume=i > 0, keep_work=True)
    return root, reports


def _onnx_ops(path):
    from vledge.compress.quantize import count_ops

    return count_ops(path)


def test_every_target_writes_a_bundle_whose_hashes_verify_and_that_classifies(bundles):
    import vledge

    root, reports = bundles
    for target, report in reports.items():
        manifest = read_manifest(root / target, verify=True)
        assert manifest.target == target and report.passed
        assert [s.name for s in report.stages] == ["load", "distill", "export", "quantize", "verify", "bundle"]
        assert manifest.labels is None  # a CLIP teacher has no class names and none were given
        model = vledge.load(root / target)
        ranked = model.classify(np.zeros((30, 30, 3), np.uint8), labels=["a cat", "a dog"], top_k=2)
        assert abs(sum(p for _, p in ranked.top) - 1) < 1e-5


def test_the_distilled_student_is_reused_across_targets(bundles):
    _, reports = bundles
    assert not reports["cpu"].stages[1].reused
    assert all(reports[t].stages[1].reused for t in ("intel-cpu", "intel-npu", "cuda", "jetson"))


def test_onnx_bundles_pass_the_checker_and_hold_quantized_nodes(bundles):
    import onnx

    root, _ = bundles
    for target in ("cpu", "cuda", "jetson"):
        for kind in ("image", "text"):
            onnx.checker.check_model(str(root / target / f"{kind}_encoder.onnx"))
    cpu = {k: _onnx_ops(root / "cpu" / f"{k}_encoder.onnx") for k in ("image", "text")}
    assert cpu["text"].get("QLinearMatMul", 0) > 0 and "DynamicQuantizeLinear" not in cpu["text"]  # static: batch-invariant
    assert sum(cpu["image"].get(op, 0) for op in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "QuantizeLinear")) > 0
    for kind in ("image", "text"):
        ops = _onnx_ops(root / "jetson" / f"{kind}_encoder.onnx")
        assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
        cuda = onnx.load(str(root / "cuda" / f"{kind}_encoder.onnx"))
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in cuda.graph.initializer)


def test_onnx_bundles_ship_compact_names_and_record_what_they_saved(bundles):
    import onnx

    root, reports = bundles
    for target in ("cpu", "cuda", "jetson"):
        manifest = read_manifest(root / target)
        for kind, tower in manifest.towers.items():
            files = [root / target / name for name in tower.files]  # the 7-bit fallback too, where there is one
            for path in files:
                graph = onnx.load(str(path)).graph
                io = {v.name for v in (*graph.input, *graph.output)}
                assert io == {t.name for t in (*tower.inputs, *tower.outputs)}
                internal = ({t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}) - io
                assert max(map(len, internal)) <= 2, (target, path.name)
            saved = reports[target].metrics["compacted"][kind]
            assert saved["bytes_after"] == sum(f.stat().st_size for f in files) < saved["bytes_before"]
    assert reports["intel-cpu"].metrics["compacted"] == {}  # OpenVINO IR ships as converted


def test_openvino_bundles_read_back_and_npu_shapes_are_static(bundles):
    import openvino as ov

    root, _ = bundles
    core = ov.Core()
    for target in ("intel-cpu", "intel-npu"):
        manifest = read_manifest(root / target)
        for kind, tower in manifest.towers.items():
            model = core.read_model(str(root / target / tower.file))
            assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
            static = all(not p.get_partial_shape().is_dynamic for p in model.inputs)
            assert static == (target == "intel-npu"), (target, kind)
            assert tower.static == (target == "intel-npu")


def test_bundle_records_config_metrics_and_provenance(bundles, teacher):
    root, reports = bundles
    data = json.loads((root / "cpu" / "vledge.json").read_text())
    assert data["config"]["target"] == "cpu" and data["config"]["distill"]["epochs"] == 1
    assert data["metrics"]["metric"] == "top1" and "drop" in data["metrics"]
    assert data["metrics"]["student_params"] < data["metrics"]["teacher_params"]
    assert data["provenance"]["teacher"]["sha256"] and data["provenance"]["teacher"]["kind"] == "hf-clip"
    assert "onnxruntime" in data["provenance"]["versions"]


def test_an_existing_bundle_is_refused_without_overwrite(bundles, teacher):
    root, _ = bundles
    with pytest.raises(BundleError, match="already exists; pass --overwrite"):
        compress(teacher, out=root / "cpu", config=resolve_config("cpu", overrides=FAST))


def test_a_leftover_work_folder_needs_resume_or_overwrite(bundles, teacher, tmp_path):
    root, _ = bundles
    with pytest.raises(ConfigError, match="holds an earlier run: pass --resume"):
        compress(teacher, out=tmp_path / "b", config=resolve_config("cpu", overrides=FAST), work_dir=root / "work")


def test_every_bundle_records_probes_that_pass_its_self_test(bundles):
    import vledge

    root, _ = bundles
    for target in ("cpu", "intel-cpu", "intel-npu", "cuda", "jetson"):
        manifest = read_manifest(root / target)
        for kind in ("image", "text"):
            entry = manifest.probes[kind]
            assert entry["count"] == 4 and entry["source"] == "held-out" and entry["reference"] == "fp32 student"
            assert entry["at_compress"]["min_cosine"] is not None
        images = np.load(root / target / manifest.probes["image"]["inputs"])
        assert images.dtype == np.uint8 and images.shape[0] == 4 and len({im.tobytes() for im in images}) == 4
        test = vledge.load(root / target).info()["self_test"]
        assert test["ran"] and test["failures"] == [], (target, test)
