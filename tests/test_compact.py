"""Compact names in shipped ONNX graphs: internal names shortened, inputs and outputs kept, outputs
bit-identical in ONNX Runtime, the checker passes, and what reads a graph still reads it."""

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vledge.bundle import TowerSpec
from vledge.compress.export.compact import compact_model_, compact_onnx, compact_towers, short_name
from vledge.errors import ExportError

LONG = "/text_model/encoder/layers.0/self_attn/q_proj/MatMul_output_0"
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _names(graph, io=None):
    """Every value and node name of ``graph`` and its subgraphs but the main graph's inputs and outputs."""
    io = io or {v.name for v in (*graph.input, *graph.output)}
    names = [t.name for t in graph.initializer] + [v.name for v in graph.value_info]
    for node in graph.node:
        names += [node.name, *node.input, *node.output]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                sub = attribute.g
                names += [v.name for v in (*sub.input, *sub.output)] + _names(sub, io)
    return [n for n in names if n and n not in io]


def _small_model(path):
    """A graph with long names, doc strings, value_info, a Constant and an If whose branches read an outer value."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), f"{LONG}/weight")
    branch = lambda tag, op: helper.make_graph(
        [helper.make_node(op, [f"{LONG}/mm", f"{LONG}/mm"], [f"{LONG}/{tag}_out"], name=f"{LONG}/{tag}")],
        f"{tag}_branch", [], [helper.make_tensor_value_info(f"{LONG}/{tag}_out", TensorProto.FLOAT, [1, 3])])
    nodes = [
        helper.make_node("MatMul", ["pixel_values", f"{LONG}/weight"], [f"{LONG}/mm"], name=f"{LONG}/MatMul",
                         doc_string="a stack trace"),
        helper.make_node("Constant", [], [f"{LONG}/zero"], value=numpy_helper.from_array(np.float32(0), "const_tensor")),
        helper.make_node("ReduceSum", [f"{LONG}/mm"], [f"{LONG}/sum"], keepdims=0, name=""),
        helper.make_node("Greater", [f"{LONG}/sum", f"{LONG}/zero"], [f"{LONG}/cond"]),
        helper.make_node("If", [f"{LONG}/cond"], [f"{LONG}/if"], then_branch=branch("then", "Add"),
                         else_branch=branch("else", "Mul")),
        helper.make_node("Relu", [f"{LONG}/if"], ["embeds"]),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [1, 3])], [w],
        value_info=[helper.make_tensor_value_info(f"{LONG}/mm", TensorProto.FLOAT, [1, 3])], doc_string="graph doc",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vledge-test")
    model.metadata_props.add(key="vledge", value="kept")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_short_names_are_unique_identifiers_shortest_first():
    names = [short_name(i) for i in range(52 * 63 + 60)]
    assert len(set(names)) == len(names)
    assert all(IDENTIFIER.fullmatch(n) for n in names)
    assert {len(n) for n in names[:52]} == {1} and {len(n) for n in names[52:52 * 64]} == {2}
    assert len(names[-1]) == 3


def test_a_small_graph_gets_short_names_keeps_its_io_and_computes_the_same(tmp_path):
    src = _small_model(tmp_path / "small.onnx")
    sizes = compact_onnx(src, tmp_path / "compact.onnx")
    model = onnx.load(str(tmp_path / "compact.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [v.name for v in model.graph.input] == ["pixel_values"] and [v.name for v in model.graph.output] == ["embeds"]
    names = _names(model.graph)
    assert max(map(len, names)) <= 2 and all(IDENTIFIER.fullmatch(n) for n in names)
    node_names = [n.name for n in model.graph.node] + [n.name for b in model.graph.node[4].attribute for n in b.g.node]
    assert len(set(node_names)) == len(node_names)  # the unnamed ones too
    assert not model.graph.doc_string and not any(n.doc_string for n in model.graph.node)
    assert model.producer_name == "vledge-test" and {p.key: p.value for p in model.metadata_props} == {"vledge": "kept"}
    assert sizes["bytes_after"] < sizes["bytes_before"] / 2
    for x in (np.ones((1, 4), np.float32), -np.ones((1, 4), np.float32)):  # both branches of the If
        before, after = _run(src, {"pixel_values": x}), _run(tmp_path / "compact.onnx", {"pixel_values": x})
        assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_generated_name_never_takes_an_input_or_output_name(tmp_path):
    model = onnx.load(str(_small_model(tmp_path / "small.onnx")))
    model.graph.output[0].name = model.graph.node[-1].output[0] = "a"  # the first short name
    renamed = compact_model_(model)
    assert renamed == 8 and model.graph.output[0].name == "a"
    assert "a" not in [t.name for t in model.graph.initializer] + [o for n in model.graph.node[:-1] for o in n.output]


def test_a_file_that_is_not_onnx_is_a_named_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"cannot read .*broken.onnx as ONNX to compact its names"):
        compact_onnx(tmp_path / "broken.onnx", tmp_path / "out.onnx")


def test_compact_towers_rewrites_every_onnx_file_and_passes_openvino_by(tmp_path):
    main, fallback = _small_model(tmp_path / "image_encoder.onnx"), _small_model(tmp_path / "image_encoder.7bit.onnx")
    xml, weights = tmp_path / "text_encoder.xml", tmp_path / "text_encoder.bin"
    onnx_spec = TowerSpec(file=main.name, format="onnx", precision="int8", inputs=[], outputs=[])
    ov_spec = TowerSpec(file=xml.name, format="openvino", precision="int8", inputs=[], outputs=[])
    towers, record = compact_towers({"image": (onnx_spec, [main, fallback]), "text": (ov_spec, [xml, weights])},
                                    tmp_path / "compact")
    assert towers["text"] == (ov_spec, [xml, weights]) and set(record) == {"image"}
    spec, files = towers["image"]
    assert spec is onnx_spec and files == [tmp_path / "compact" / main.name, tmp_path / "compact" / fallback.name]
    assert record["image"]["bytes_before"] == main.stat().st_size + fallback.stat().st_size
    assert record["image"]["bytes_after"] == sum(f.stat().st_size for f in files)
    assert all(max(map(len, _names(onnx.load(str(f)).graph))) <= 2 for f in files)


@pytest.fixture(scope="module")
def clip_towers(tmp_path_factory):
    """A tiny Hugging Face CLIP's towers in FP32 and quantized by every ONNX scheme, each also compacted."""
    from tiny_clip import make_tiny_clip_folder
    from vledge.compress.export import export_onnx
    from vledge.compress.quantize import CalibrationData, default_config, quantize
    from vledge.data import load_dataset
    from vledge.models import load_teacher

    root = tmp_path_factory.mktemp("compact")
    model = load_teacher(make_tiny_clip_folder(root / "teacher"))
    calibration = CalibrationData.from_dataset(model, load_dataset("digits"), 16, seed=0)
    files = {}
    for kind in ("image", "text"):
        export_onnx(model, kind, root / f"{kind}.onnx")
        files[kind, "fp32"] = root / f"{kind}.onnx"
        for scheme, overrides in (("ort-cpu", {"weight_bits": 8}), ("ort-tensorrt", {}), ("fp16", {})):
            spec = quantize(root / f"{kind}.onnx", kind, default_config(scheme, **overrides), calibration, root / scheme)
            for name in spec.files:  # ort-cpu's 8-bit tower and its 7-bit fallback
                files[kind, f"{scheme} {name}"] = root / scheme / name
    compacted = {key: root / "compacted" / key[1].replace(" ", "-") / path.name for key, path in files.items()}
    for key, path in files.items():
        compact_onnx(path, compacted[key])
    return files, compacted, calibration


def test_quantized_towers_compute_bit_identical_outputs_after_compaction(clip_towers):
    from vledge.bench.measure import count_onnx_parameters
    from vledge.compress.quantize import count_ops

    files, compacted, calibration = clip_towers
    assert len(files) == 10
    for key, path in files.items():
        new = compacted[key]
        onnx.checker.check_model(str(new))
        assert new.stat().st_size < 0.8 * path.stat().st_size, key
        assert count_ops(new) == count_ops(path)
        assert count_onnx_parameters(new) == count_onnx_parameters(path) > 0  # counted by use, not by name
        for feed in calibration.batches(key[0], 8)[:2]:
            assert np.array_equal(_run(path, feed)[0], _run(new, feed)[0]), key


def test_a_compacted_tower_still_converts_to_openvino(clip_towers):
    pytest.importorskip("openvino")
    import openvino as ov

    from vledge.compress.export import convert_onnx

    files, compacted, calibration = clip_towers
    feed = calibration.batches("text", 4)[0]
    outputs = []
    for path in (files["text", "fp32"], compacted["text", "fp32"]):
        compiled = ov.Core().compile_model(convert_onnx(path, "text"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs.append(compiled(feed)[0])
        assert [p.get_any_name() for p in compiled.inputs] == ["input_ids", "attention_mask"]
    assert np.array_equal(*outputs)
