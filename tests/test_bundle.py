"""The bundle writer (atomic, overwrite rules) and the checks a bundle passes before any framework opens it."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vledge
from bundles import build_bundle, exported_towers, tiny_model
from vledge.bundle import MANIFEST
from vledge.bundle_files import read_manifest
from vledge.compress.bundle import writer as bundle_writer
from vledge.errors import BundleError, ConfigError
from vledge.runtimes.onnxruntime_backend import OnnxRuntime


def siblings(folder):
    return sorted(p.name for p in folder.iterdir())


def edit_manifest(bundle, change):
    data = json.loads((bundle / MANIFEST).read_text())
    change(data)
    (bundle / MANIFEST).write_text(json.dumps(data))


@pytest.fixture
def bundle(tmp_path):
    return build_bundle(tmp_path / "bundle")


def test_written_bundle_lists_and_hashes_every_file(bundle):
    manifest = read_manifest(bundle, verify=True)
    assert sorted(manifest.files) == [
        "image_encoder.onnx", "label_embeddings.npy", "labels.json", "probes/image_embeddings.npy",
        "probes/images.npy", "probes/text_embeddings.npy", "probes/texts.json", "text_encoder.onnx", "tokenizer.json"]
    assert manifest.provenance["teacher"] == "tiny"
    versions = manifest.provenance["versions"]
    assert {"vledge", "onnx", "onnxruntime", "openvino", "torch"} <= set(versions)
    assert json.loads((bundle / "labels.json").read_text())["names"] == ["t-shirt", "trouser", "sneaker", "bag"]
    assert siblings(bundle.parent) == ["bundle"]  # no temporary folder left behind


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(bundle_writer, "write_manifest", fail)
    with pytest.raises(type(failure)):
        build_bundle(tmp_path / "bundle")
    assert siblings(tmp_path) == []


def test_staging_left_by_a_killed_writer_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".bundle.tmp-{dead.pid}-x1y2"
    running = tmp_path / f".bundle.tmp-{os.getpid()}-a1b2"  # a live writer: not ours to remove
    other = tmp_path / f".photos.tmp-{dead.pid}-c3d4"  # staging of another destination
    for folder in (stale, running, other):
        folder.mkdir()
        (folder / "image_encoder.onnx").write_bytes(b"partial")
    build_bundle(tmp_path / "bundle")
    assert siblings(tmp_path) == sorted([running.name, other.name, "bundle"])


def test_existing_bundle_is_refused_without_overwrite(bundle):
    with pytest.raises(BundleError, match=r"bundle already exists; choose another folder or pass overwrite=True \(--overwrite\)"):
        build_bundle(bundle)


def test_overwrite_replaces_only_when_complete(bundle, monkeypatch):
    before = (bundle / MANIFEST).read_text()
    monkeypatch.setattr(bundle_writer, "_write_labels", lambda *a: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(OSError):
        build_bundle(bundle, overwrite=True)
    assert (bundle / MANIFEST).read_text() == before  # the old bundle is untouched
    assert siblings(bundle.parent) == ["bundle"]
    monkeypatch.undo()
    build_bundle(bundle, overwrite=True, labels=False)
    assert not (bundle / "labels.json").exists()
    assert read_manifest(bundle).labels is None
    assert siblings(bundle.parent) == ["bundle"]


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(BundleError, match=r"refusing to overwrite .*photos: it is not a vledge bundle \(no vledge.json\)"):
        build_bundle(tmp_path / "photos", overwrite=True)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


def test_tampered_tower_is_refused_before_any_framework_opens_it(bundle, monkeypatch):
    opened = []
    monkeypatch.setattr(OnnxRuntime, "__init__", lambda self, *a: opened.append(a))
    data = bytearray((bundle / "image_encoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "image_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bundle file image_encoder.onnx does not match its sha256 in vledge.json: "
                       r"it was changed after export; refusing to load it"):
        vledge.load(bundle)
    assert opened == []


@pytest.mark.parametrize("path, message", [
    ("../image_encoder.onnx", "bundle path '../image_encoder.onnx' points outside the bundle folder"),
    ("/etc/passwd", "bundle path '/etc/passwd' must be relative to the bundle folder"),
])
def test_paths_outside_the_bundle_are_refused(bundle, path, message):
    edit_manifest(bundle, lambda d: d["towers"]["image"].update(file=path))
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


def test_unknown_format_version(bundle):
    edit_manifest(bundle, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match=r"bundle format version 99 is not supported by this vledge \(reads version 1\)"):
        vledge.load(bundle)


def test_unknown_target_in_manifest(bundle):
    edit_manifest(bundle, lambda d: d.update(target="tpu-v9"))
    with pytest.raises(BundleError, match=r"names target 'tpu-v9', unknown to this vledge"):
        vledge.load(bundle)


@pytest.mark.parametrize("name", ["tokenizer.json", "text_encoder.onnx", "label_embeddings.npy"])
def test_missing_file(bundle, name):
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=rf"bundle file {name} is missing from .*bundle; re-run vledge compress"):
        vledge.load(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"has no vledge.json: not a vledge bundle"):
        vledge.load(tmp_path)


def test_writer_validates_its_inputs(tmp_path):
    towers = exported_towers()
    model = tiny_model()
    common = dict(tokenizer=model.tokenizer, preprocess=model.preprocess, precision="fp32", embed_dim=model.embed_dim,
                  logit_scale=1.0, config={}, metrics={}, provenance={})
    with pytest.raises(ConfigError, match=r"unknown target 'jetsn'. Did you mean 'jetson'\?"):
        bundle_writer.write_bundle(tmp_path / "b", towers=towers, target="jetsn", **common)
    bad = {"names": ["a", "b"], "embeddings": np.ones((2, model.embed_dim), np.float32)}
    with pytest.raises(ConfigError, match=r"label embeddings must be L2-normalised"):
        bundle_writer.write_bundle(tmp_path / "b", towers=towers, target="cpu", labels=bad, **common)
    xml = tmp_path / "work" / "image_encoder.xml"
    xml.parent.mkdir()
    xml.write_text("<net/>")
    ir_spec = dataclasses.replace(towers["image"][0], file=xml.name, format="openvino")
    with pytest.raises(ConfigError, match=r"image tower image_encoder.xml is OpenVINO IR but its .bin weights file was not given"):
        bundle_writer.write_bundle(tmp_path / "b", towers={"image": (ir_spec, [xml])}, target="intel-cpu", **common)
    assert siblings(tmp_path) == ["work"]
