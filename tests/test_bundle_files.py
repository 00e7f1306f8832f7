"""The files a bundle is made of: all listed and hashed, none a link, each read once and handed over as bytes.

Covers what a runtime opens by itself (an OpenVINO IR's .bin, ONNX external data), links anywhere in the
folder (vledge.json too), unlisted and special files, and a tower swapped while loads run.
"""

import os
import shutil
import threading

import numpy as np
import pytest

import vledge
import vledge.runtimes as runtimes_module
from bundles import build_bundle, edit_manifest, rehash, sample_images
from vledge.bundle import MANIFEST
from vledge.bundle_files import read_manifest
from vledge.errors import BundleError


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    return {"onnx": build_bundle(root / "onnx"), "openvino": build_bundle(root / "ov", openvino=True, target="intel-cpu")}


@pytest.fixture
def bundle(originals, tmp_path):
    return shutil.copytree(originals["onnx"], tmp_path / "bundle")


@pytest.fixture
def ir_bundle(originals, tmp_path):
    pytest.importorskip("openvino")
    return shutil.copytree(originals["openvino"], tmp_path / "ir-bundle")



LINK = r"is a symbolic link \(or passes through one\): a bundle holds only regular files"


# --- every file listed; no links, no special files


def test_an_unlisted_file_is_refused(bundle):
    (bundle / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"bundle holds notes.txt, which vledge.json does not list: a runtime could read "
                                          r"it unchecked; remove it, or re-run vledge compress to list it"):
        vledge.load(bundle)


def test_an_unlisted_folder_is_refused_and_a_runtime_cache_is_not(bundle):
    (bundle / ".trt_cache").mkdir()
    (bundle / ".trt_cache" / "engine.bin").write_bytes(b"written by TensorRT")
    vledge.load(bundle)
    (bundle / "extra").mkdir()
    with pytest.raises(BundleError, match=r"bundle holds extra/, which vledge.json does not list"):
        vledge.load(bundle)


def test_the_manifest_itself_as_a_link_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle / MANIFEST, outside)
    os.symlink(outside, bundle / MANIFEST)
    with pytest.raises(BundleError, match=rf"vledge.json in .*bundle {LINK}"):
        vledge.load(bundle)


@pytest.mark.parametrize("name", ["tokenizer.json", "alias.onnx"])
def test_a_link_to_a_file_inside_the_bundle_is_refused_too(bundle, name):
    # Even pointing inside: a link can be repointed after the check, a regular file cannot.
    if name == "tokenizer.json":
        shutil.move(bundle / name, bundle / "real-tokenizer.json")
        os.symlink("real-tokenizer.json", bundle / name)
    else:
        os.symlink("image_encoder.onnx", bundle / name)
    with pytest.raises(BundleError, match=LINK):
        vledge.load(bundle)


def test_a_linked_subfolder_is_refused(bundle, tmp_path):
    (tmp_path / "towers").mkdir()
    shutil.move(bundle / "image_encoder.onnx", tmp_path / "towers" / "image_encoder.onnx")
    os.symlink(tmp_path / "towers", bundle / "sub")
    edit_manifest(bundle, lambda d: (d["towers"]["image"].update(file="sub/image_encoder.onnx"),
                                     d["files"].update({"sub/image_encoder.onnx": d["files"].pop("image_encoder.onnx")})))
    with pytest.raises(BundleError, match=rf"sub in .*bundle {LINK}"):
        vledge.load(bundle)


def test_a_real_subfolder_is_read(bundle):
    (bundle / "towers").mkdir()
    shutil.move(bundle / "image_encoder.onnx", bundle / "towers" / "image_encoder.onnx")
    edit_manifest(bundle, lambda d: (d["towers"]["image"].update(file="towers/image_encoder.onnx"),
                                     d["files"].update({"towers/image_encoder.onnx": d["files"].pop("image_encoder.onnx")})))
    assert vledge.load(bundle).encode_image(sample_images(1)).shape == (1, 16)


def test_a_fifo_in_the_bundle_never_hangs(bundle):
    (bundle / "tokenizer.json").unlink()
    os.mkfifo(bundle / "tokenizer.json")
    with pytest.raises(BundleError, match=r"tokenizer.json in .*bundle is not a regular file \(a FIFO, socket or device\)"):
        vledge.load(bundle)
    (bundle / MANIFEST).rename(bundle / "m.json")
    os.mkfifo(bundle / MANIFEST)
    with pytest.raises(BundleError, match=r"vledge.json in .*bundle is not a regular file"):
        read_manifest(bundle, verify=False)


def test_the_bundle_folder_itself_may_be_a_link(bundle, tmp_path):
    # A deployment's "current -> bundle-v3" link: everything is still read inside the folder it names.
    os.symlink(bundle, tmp_path / "current")
    assert vledge.load(tmp_path / "current").encode_text("a bag").shape == (1, 16)


# --- what a runtime would open by itself


def test_an_openvino_bin_left_out_of_the_manifest_is_refused(ir_bundle):
    edit_manifest(ir_bundle, lambda d: d["files"].pop("image_encoder.bin"))
    with pytest.raises(BundleError, match=r"image_encoder.bin is used by the bundle but has no sha256 in vledge.json"):
        vledge.load(ir_bundle)


def test_an_openvino_bin_linked_to_weights_outside_is_refused(ir_bundle, tmp_path):
    outside = tmp_path / "other-weights.bin"
    shutil.move(ir_bundle / "text_encoder.bin", outside)
    os.symlink(outside, ir_bundle / "text_encoder.bin")
    with pytest.raises(BundleError, match=rf"text_encoder.bin in .*ir-bundle {LINK}"):
        vledge.load(ir_bundle)


def _with_external_data(bundle, location="image_encoder.data"):
    """The image tower re-saved with its weights in an external data file, as large towers are."""
    import onnx

    path = bundle / "image_encoder.onnx"
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="image_encoder.data", size_threshold=0)
    if location != "image_encoder.data":
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(model, str(path))
    rehash(bundle)
    return bundle


def test_onnx_external_data_is_read_with_the_bundle(bundle, originals):
    expected = vledge.load(originals["onnx"]).encode_image(sample_images(2))
    _with_external_data(bundle)
    assert "image_encoder.data" in read_manifest(bundle).files
    np.testing.assert_array_equal(vledge.load(bundle).encode_image(sample_images(2)), expected)


def test_onnx_external_data_unlisted_or_changed_is_refused(bundle):
    _with_external_data(bundle)
    data = bytearray((bundle / "image_encoder.data").read_bytes())
    data[100] ^= 0xFF
    (bundle / "image_encoder.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bundle file image_encoder.data does not match its sha256"):
        vledge.load(bundle)
    edit_manifest(bundle, lambda d: d["files"].pop("image_encoder.data"))
    with pytest.raises(BundleError, match=r"holds image_encoder.data, which vledge.json does not list"):
        vledge.load(bundle)


def test_onnx_external_data_outside_the_bundle_is_never_read(bundle, tmp_path, monkeypatch):
    _with_external_data(bundle, location="../image_encoder.data")
    shutil.move(bundle / "image_encoder.data", tmp_path / "image_encoder.data")
    rehash(bundle)
    monkeypatch.chdir(bundle)  # where ONNX Runtime resolves a graph built from bytes without a table
    with pytest.raises(BundleError, match=r"ONNX Runtime cannot open image_encoder.onnx: .*\.\./image_encoder.data"):
        vledge.load(bundle, backend="onnxruntime")


def test_openvino_refuses_onnx_external_data_it_would_read_from_disk(bundle):
    pytest.importorskip("openvino")
    _with_external_data(bundle)
    with pytest.raises(BundleError, match=r"image_encoder.onnx keeps its weights in external data files, which OpenVINO "
                                          r"would read from disk unchecked; run this bundle with backend='onnxruntime'"):
        vledge.load(bundle, backend="openvino")


# --- read once: the frameworks get the bytes that were checked


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_nothing_is_opened_by_path_after_the_files_are_read(originals, tmp_path, monkeypatch, kind):
    if kind == "openvino":
        pytest.importorskip("openvino")
    bundle = shutil.copytree(originals[kind], tmp_path / "bundle")
    real = runtimes_module.read_bundle

    def read_then_move_away(*args, **kwargs):
        files = real(*args, **kwargs)
        bundle.rename(tmp_path / "gone")  # any later open by path now fails
        return files

    monkeypatch.setattr(runtimes_module, "read_bundle", read_then_move_away)
    model = vledge.load(bundle, threads=1)
    assert not bundle.exists()
    assert model.classify(sample_images(1), top_k=1)[0].label in model.label_set.names
    assert model.encode_text(["a bag"]).shape == (1, 16)


LOADS = 200  # the count; about 6 s here (2 cores shared)


def test_a_tower_swapped_during_loads_is_never_run(bundle, tmp_path):
    from tiny_models import tiny_dual_encoder
    from vledge.compress.export import export_onnx

    swapped = tmp_path / "swapped.onnx"
    export_onnx(tiny_dual_encoder(seed=1), "image", swapped)
    original = tmp_path / "original.onnx"
    shutil.copyfile(bundle / "image_encoder.onnx", original)
    images = sample_images(2)
    expected = vledge.load(bundle, threads=1).encode_image(images)
    assert not np.allclose(vledge.load(build_bundle(tmp_path / "other"), threads=1).encode_image(images), 0)

    stop = threading.Event()

    def swap():
        staging = tmp_path / "staging.onnx"
        while not stop.is_set():
            for source in (swapped, original):
                shutil.copyfile(source, staging)
                os.replace(staging, bundle / "image_encoder.onnx")

    renamer = threading.Thread(target=swap)
    renamer.start()
    outcomes = {"original": 0, "swapped": 0, "refused": 0}
    try:
        for _ in range(LOADS):
            try:
                got = vledge.load(bundle, backend="onnxruntime", threads=1).encode_image(images)
            except BundleError as exc:
                assert "image_encoder.onnx does not match its sha256" in str(exc)
                outcomes["refused"] += 1
                continue
            outcomes["original" if np.allclose(got, expected, atol=1e-6) else "swapped"] += 1
    finally:
        stop.set()
        renamer.join()
    print(f"{LOADS} loads during the swaps: {outcomes}")
    assert outcomes["swapped"] == 0, outcomes
    assert outcomes["refused"] > 0 and outcomes["original"] > 0, outcomes  # the race was really run
