"""Fault injection, bundles: tampering, escapes, broken manifests and files, before and inside the runtimes.

Already covered in test_bundle (not repeated here): an ONNX tower changed after export, a tower path with
``../`` or an absolute path, an unknown format version or target, a missing tokenizer, tower or label
file, a folder that is not a bundle, interrupted and refused writes.
"""

import os
import shutil

import numpy as np
import pytest

import vledge
from bundles import build_bundle, edit_manifest, rehash, sample_images
from faults import assert_clean_failure, run_vledge
from vledge.bundle import MANIFEST
from vledge.errors import BundleError


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {"onnx": build_bundle(root / "onnx"), "openvino": build_bundle(root / "ov", openvino=True, target="intel-cpu")}


@pytest.fixture
def bundle(originals, tmp_path):
    return shutil.copytree(originals["onnx"], tmp_path / "bundle")


@pytest.fixture
def ir_bundle(originals, tmp_path):
    pytest.importorskip("openvino")
    return shutil.copytree(originals["openvino"], tmp_path / "ir-bundle")



# --- tampering and escapes, refused before any framework opens a file


def test_tampered_openvino_weights_are_refused_before_openvino_reads_them(ir_bundle, monkeypatch):
    from vledge.runtimes.openvino_backend import OpenVinoRuntime

    opened = []
    monkeypatch.setattr(OpenVinoRuntime, "__init__", lambda self, *a: opened.append(a))
    weights = ir_bundle / "text_encoder.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bundle file text_encoder.bin does not match its sha256 in vledge.json: "
                                          r"it was changed after export; refusing to load it"):
        vledge.load(ir_bundle)
    assert opened == []


@pytest.mark.parametrize("target", ["outside", "sibling"])
def test_symlink_out_of_the_bundle_is_refused_even_with_a_matching_hash(bundle, tmp_path, target):
    # A link to the very same bytes elsewhere still lets the bundle read outside its folder: refused.
    moved = tmp_path / ("elsewhere" if target == "outside" else "bundle-sibling") / "tokenizer.json"
    moved.parent.mkdir()
    shutil.move(bundle / "tokenizer.json", moved)
    os.symlink(moved, bundle / "tokenizer.json")
    with pytest.raises(BundleError, match=r"tokenizer.json in .*bundle is a symbolic link \(or passes through one\): "
                                          r"a bundle holds only regular files"):
        vledge.load(bundle)


@pytest.mark.parametrize("change, path", [
    (lambda d: d["files"].update({"../secret.txt": "0" * 64}), "../secret.txt"),
    (lambda d: d["tokenizer"].update(file="../../tokenizer.json"), "../../tokenizer.json"),
    (lambda d: d["labels"].update(embeddings="/etc/passwd"), "/etc/passwd"),
    (lambda d: d["towers"]["text"].update(file="sub/../../text_encoder.onnx"), "sub/../../text_encoder.onnx"),
])
def test_every_manifest_path_stays_inside_the_bundle(bundle, change, path):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=rf"bundle path '{path}' (points outside the bundle folder|must be relative)"):
        vledge.load(bundle)


# --- broken manifests


@pytest.mark.parametrize("text, message", [
    ("{not json", r"vledge.json is not valid JSON: "),
    ("[1, 2]", r"vledge.json must hold a JSON object, not a list; re-run vledge compress"),
    ('{"format": "something-else"}', r"not a vledge bundle manifest \(format='something-else'\)"),
])
def test_manifest_that_cannot_be_read(bundle, text, message):
    (bundle / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("towers"), r"vledge.json has no field towers; it is incomplete: re-run vledge compress"),
    (lambda d: d["towers"]["image"].pop("inputs"), r"vledge.json has no field towers.image.inputs; it is incomplete"),
    (lambda d: d["preprocess"].update(image_size=-3),
     r"vledge.json field preprocess.image_size must be a whole number from 1 to 8192, got int -3; re-run vledge compress"),
    (lambda d: d["files"].pop("tokenizer.json"), r"tokenizer.json is used by the bundle but has no sha256 in vledge.json"),
    (lambda d: d["towers"]["image"].update(format="tflite"),
     r"vledge.json field towers.image.format is 'tflite', a format this vledge cannot run \(it runs: onnx, openvino\)"),
])
def test_manifest_that_is_incomplete(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


# --- files that match their hash but are broken: the runtime names the file, never a framework traceback


def test_corrupt_onnx_tower(bundle):
    (bundle / "image_encoder.onnx").write_bytes(b"not a protobuf" * 8)
    rehash(bundle)
    with pytest.raises(BundleError, match=r"ONNX Runtime cannot open image_encoder.onnx: InvalidProtobuf"):
        vledge.load(bundle)


@pytest.mark.parametrize("file, data", [("image_encoder.xml", b"<net"), ("image_encoder.bin", b"\0" * 10)])
def test_corrupt_openvino_tower(ir_bundle, file, data):
    (ir_bundle / file).write_bytes(data)
    rehash(ir_bundle)
    with pytest.raises(BundleError, match=r"OpenVINO cannot compile image_encoder.xml for CPU: "):
        vledge.load(ir_bundle)


def test_corrupt_tokenizer(bundle):
    (bundle / "tokenizer.json").write_text("{}")
    rehash(bundle)
    with pytest.raises(BundleError, match=r"cannot read tokenizer .*tokenizer.json: .*; re-run vledge compress"):
        vledge.load(bundle)


@pytest.mark.parametrize("file, write, message", [
    ("labels.json", lambda p: p.write_text("nope"), r"labels.json is not valid JSON: Expecting value"),
    ("labels.json", lambda p: p.write_text('{"names": [1, 2, 3, 4]}'),
     r"labels.json must list label names as non-empty strings; re-run vledge compress"),
    ("label_embeddings.npy", lambda p: np.save(p, np.array([{"code": 1}], dtype=object), allow_pickle=True),
     r"label_embeddings.npy holds object values; label embeddings must be floats \(float16, float32 or float64\)"),
    ("label_embeddings.npy", lambda p: np.save(p, np.ones((2, 3), np.float32)),
     r"label_embeddings.npy has shape \(2, 3\), but labels.json names 4 labels of dimension 16"),
])
def test_broken_compiled_label_set(bundle, file, write, message):
    write(bundle / file)
    rehash(bundle)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


# --- the command line


def test_cli_tampered_and_unreadable_bundles_are_clean_messages(bundle, tmp_path):
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(sample_images(1)[0]).save(image)
    assert run_vledge("run", bundle, image).returncode == 0
    (bundle / "text_encoder.onnx").write_bytes((bundle / "text_encoder.onnx").read_bytes()[:-1] + b"\0")
    assert_clean_failure(run_vledge("run", bundle, image), "run", "text_encoder.onnx does not match its sha256")
    (bundle / MANIFEST).write_text("[]")
    assert_clean_failure(run_vledge("run", bundle, image), "run", "vledge.json must hold a JSON object")
