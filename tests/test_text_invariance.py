"""A prompt's embedding does not depend on the other prompts of its batch, on every CPU scheme's text tower.

Through the bundle and `vledge.load`, as a user embeds: one prompt alone, then inside a batch whose longer
and shorter prompts change its padding and its batch-mates. Dynamic INT8 (the ort-cpu text default
before) computes one activation scale over the whole batch and fails this; it is kept as the case that
shows the test can fail.
"""

import os

import numpy as np
import pytest

import vledge
from bundles import build_bundle, exported_towers, tiny_model
from vledge.compress.quantize import CalibrationData, default_config, quantize
from vledge.compress.stages import tower_files
from vledge.data.fashion_mnist import DEFAULT_DIR, FashionMNIST

pytestmark = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason="Fashion-MNIST is not installed")

PROMPTS = ["coat", "a photo of a shirt", "a blurry photo of a bag lying on a wooden table next to a sandal",
           "an ankle boot", "a drawing of a pullover", "dress"]
INVARIANT = 1e-6  # max abs difference on the normalised embedding


@pytest.fixture(scope="module")
def calibration():
    return CalibrationData.from_dataset(tiny_model(), FashionMNIST("train"), 64, seed=0)


def bundle_with_text_tower(out, calibration, target, config, openvino=False):
    towers = dict(exported_towers(openvino=openvino))
    folder = out.parent / f"q-{out.name}"
    spec = quantize(towers["text"][1][0], "text", config, calibration, folder)
    towers["text"] = (spec, tower_files(folder, spec))
    return build_bundle(out, target=target, towers=towers)


def largest_move(model) -> float:
    together = model.encode_text(PROMPTS)
    alone = np.concatenate([model.encode_text([p]) for p in PROMPTS])
    return float(np.abs(together - alone).max())


@pytest.mark.parametrize("target,scheme,openvino,options", [
    ("cpu", "ort-cpu", False, {}),
    ("intel-cpu", "nncf", True, {"exact": True}),  # f32: OpenVINO's default bf16 is not batch-invariant
])
def test_text_embeddings_are_batch_invariant(tmp_path, calibration, target, scheme, openvino, options):
    bundle = bundle_with_text_tower(tmp_path / "b", calibration, target, default_config(scheme), openvino)
    model = vledge.load(bundle, device="cpu", **options)
    assert model.info()["towers"]["text"]["precision"] == "int8"
    assert largest_move(model) <= INVARIANT


def test_dynamic_int8_text_tower_moves_with_its_batch(tmp_path, calibration):
    config = default_config("ort-cpu", ort_cpu_format={"text": "dynamic"})
    bundle = bundle_with_text_tower(tmp_path / "d", calibration, "cpu", config)
    assert largest_move(vledge.load(bundle, device="cpu")) > 100 * INVARIANT
