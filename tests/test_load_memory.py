"""What a load keeps in memory: no tower's bytes outlive the load."""

import sys

import numpy as np
import pytest

import vledge
from bundles import build_bundle
from vledge import runtimes
from vledge.bundle_files import openvino_weights

pytest.importorskip("onnxruntime")


def refcounts(items: list) -> list[int]:
    return [sys.getrefcount(item) for item in items]


def other_holders(items: list) -> list[int]:
    """How many references each of ``items`` has besides the list's own (0 each for a list of fresh objects)."""
    fresh = [bytes(1) + bytes(i) for i in range(len(items))]
    return [n - alone for n, alone in zip(refcounts(items), refcounts(fresh))]


@pytest.fixture
def read_towers(monkeypatch) -> list:
    """Fills with the bytes of every tower file each ``vledge.load`` reads (in the manifest's order)."""
    seen = []
    real = runtimes.read_bundle

    def reading(*args, **kwargs):
        bundle = real(*args, **kwargs)
        for tower in bundle.manifest.towers.values():
            seen.extend(bundle.contents[f] for f in ([tower.file, openvino_weights(tower.file)]
                                                      if tower.format == "openvino" else [tower.file]))
        return bundle

    monkeypatch.setattr(runtimes, "read_bundle", reading)
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
