"""What a load keeps in memory: no tower's bytes outlive its build, and a tower built again (a self-test
fallback) is read again and checked again."""

import sys

import numpy as np
import pytest

import vledge
from bundles import build_bundle
from vledge import bundle_files, runtimes
from vledge.bundle_files import tower_files
from vledge.errors import SelfTestError

pytest.importorskip("onnxruntime")


def refcounts(items: list) -> list[int]:
    return [sys.getrefcount(item) for item in items]


def other_holders(items: list) -> list[int]:
    """How many references each of ``items`` has besides the list's own (0 each for a list of fresh objects)."""
    fresh = [bytes(1) + bytes(i) for i in range(len(items))]
    return [n - alone for n, alone in zip(refcounts(items), refcounts(fresh))]


@pytest.fixture
def read_towers(monkeypatch) -> list:
    """Fills with the bytes of every tower file each ``vledge.load`` reads (in the manifest's order), at its start
    and for a fallback (``BundleFiles.reread``)."""
    seen = []
    real = bundle_files.read_bundle

    def reading(*args, **kwargs):
        bundle = real(*args, **kwargs)
        seen.extend(bundle.contents[f] for tower in bundle.manifest.towers.values() for f in tower_files(tower))
        return bundle

    monkeypatch.setattr(runtimes, "read_bundle", reading)
    monkeypatch.setattr(bundle_files, "read_bundle", reading)
    return seen


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_no_tower_bytes_outlive_the_load(tmp_path, read_towers, backend):
    """ONNX Runtime's Python session kept its graph's bytes for its whole life (the bundle's size again)."""
    pytest.importorskip(backend)
    openvino = backend == "openvino"
    bundle = build_bundle(tmp_path / "b", target="intel-cpu" if openvino else "cpu", openvino=openvino)
    model = vledge.load(bundle, backend=backend)
    assert len(read_towers) == (4 if openvino else 2)
    assert other_holders(read_towers) == [0] * len(read_towers)
    assert model.encode_image(np.zeros((8, 8, 3), np.uint8)).shape == (1, model.embed_dim)


def test_a_tower_s_bytes_are_let_go_before_the_next_tower_is_built(tmp_path, read_towers, monkeypatch):
    import onnxruntime

    bundle = build_bundle(tmp_path / "b")
    held_at_text_build = []

    class Recording(onnxruntime.InferenceSession):
        def __init__(self, data, *args, **kwargs):
            if data is read_towers[1]:  # the text graph; the image tower's is read_towers[0]
                held_at_text_build.append(other_holders(read_towers)[0])
            super().__init__(data, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Recording)
    vledge.load(bundle)
    assert held_at_text_build == [0]


@pytest.fixture
def intel_cpu_bundle(tmp_path):
    pytest.importorskip("openvino")
    return build_bundle(tmp_path / "b", target="intel-cpu")


def constant_openvino_images(monkeypatch, before_fallback=lambda: None):
    """OpenVINO gives one embedding for every image, so the image tower falls back to ONNX Runtime."""
    from vledge.runtimes.openvino_backend import OpenVinoRuntime

    real = OpenVinoRuntime.run

    def constant_images(self, kind, feeds):
        out = real(self, kind, feeds)
        if kind != "image":
            return out
        before_fallback()
        return np.ones_like(out)

    monkeypatch.setattr(OpenVinoRuntime, "run", constant_images)


def test_a_fallback_builds_the_tower_from_the_bundle_read_again(intel_cpu_bundle, read_towers, monkeypatch):
    constant_openvino_images(monkeypatch)
    model = vledge.load(intel_cpu_bundle, exact=True)
    assert model.info()["towers"]["image"]["placement"] == "onnxruntime:cpu"
    assert len(read_towers) == 4  # the first read, then the fallback's
    assert other_holders(read_towers) == [0] * 4


def test_a_tower_changed_on_disk_before_its_fallback_is_refused_not_run(intel_cpu_bundle, monkeypatch):
    image = intel_cpu_bundle / "image_encoder.onnx"
    original = image.read_bytes()

    def swap():
        image.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))

    constant_openvino_images(monkeypatch, swap)
    try:
        with pytest.raises(SelfTestError, match=r"image tower could not start on onnxruntime:cpu: bundle file "
                                                r"image_encoder.onnx does not match its sha256"):
            vledge.load(intel_cpu_bundle, exact=True)
    finally:
        image.write_bytes(original)
