"""`vledge labels`: a new label set compiled into a bundle by its own text tower, verifiable, atomic, torch-free."""

import json
import subprocess
import sys

import numpy as np
import pytest

import vledge
from bundles import build_bundle, compiled_labels, tiny_model
from vledge.bundle import sha256_file
from vledge.bundle_files import read_manifest
from vledge.cli import main
from vledge.errors import BundleError, ConfigError
from vledge.relabel import compile_labels, read_label_file

NEW = ["ankle boot", "pullover", "dress"]


@pytest.fixture
def bundle(tmp_path):
    return build_bundle(tmp_path / "bundle")


def test_new_labels_match_the_pytorch_text_tower_and_the_bundle_still_verifies(bundle, tmp_path):
    towers_before = {rel: h for rel, h in read_manifest(bundle).files.items() if rel.endswith(".onnx")}
    label_file = tmp_path / "set.json"
    label_file.write_text(json.dumps({"names": NEW, "templates": ["a photo of a {}."]}))
    assert main(["labels", str(bundle), "--set", str(label_file)]) == 0
    manifest = read_manifest(bundle, verify=True)
    assert {rel: h for rel, h in manifest.files.items() if rel.endswith(".onnx")} == towers_before
    assert manifest.files["labels.json"] == sha256_file(bundle / "labels.json")
    assert manifest.provenance["labels"]["count"] == 3 and manifest.provenance["teacher"] == "tiny"
    model = vledge.load(bundle)
    assert model.label_set.names == NEW and model.label_set.templates == ["a photo of a {}."]
    expected = compiled_labels(tiny_model(), NEW, ["a photo of a {}."])["embeddings"]
    assert np.abs(model.label_set.embeddings - expected).max() < 1e-5
    assert {name for name, _ in model.classify(np.zeros((28, 28), np.uint8), top_k=5).top} == set(NEW)
    assert not list(bundle.parent.glob(".bundle.*")), "no staging or old folder left behind"


def test_text_files_keep_the_bundles_templates(bundle, tmp_path):
    label_file = tmp_path / "set.txt"
    label_file.write_text("# warehouse\nforklift\n\npallet\n")
    assert read_label_file(label_file) == (["forklift", "pallet"], None)
    done = compile_labels(bundle, *read_label_file(label_file))
    assert done["templates"] == ["a photo of a {}.", "a picture of a {}."]  # the tiny bundle's own


def test_a_tampered_bundle_is_refused_and_left_as_it_was(bundle, tmp_path):
    onnx = bundle / "image_encoder.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"x")
    before = (bundle / "vledge.json").read_text()
    with pytest.raises(BundleError, match="does not match its sha256"):
        compile_labels(bundle, NEW)
    assert (bundle / "vledge.json").read_text() == before


@pytest.mark.parametrize("names, message", [([], "non-empty list"), (["a", "a"], "duplicate"), (["a", 3], "strings")])
def test_bad_label_sets_are_named_and_change_nothing(bundle, names, message):
    before = (bundle / "vledge.json").read_text()
    with pytest.raises(ConfigError, match=message):
        compile_labels(bundle, names)
    assert (bundle / "vledge.json").read_text() == before
    assert not list(bundle.parent.glob(".bundle.*"))


def test_relabel_never_imports_torch(bundle, tmp_path):
    label_file = tmp_path / "set.txt"
    label_file.write_text("forklift\npallet\n")
    script = (f"import sys; from vledge.cli import main; code = main(['labels', {str(bundle)!r}, '--set', "
              f"{str(label_file)!r}]); print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
