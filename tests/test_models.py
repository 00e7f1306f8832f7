import json

import numpy as np
import pytest
import torch

from tiny_models import tiny_dual_encoder
from vledge.errors import CheckpointError
from vledge.models import load_teacher, save_dual_encoder


@pytest.mark.parametrize("image", ["vit", "mobilenet"])
def test_tiny_models_are_under_a_megabyte_and_round_trip_exactly(tmp_path, image):
    model = tiny_dual_encoder(image)
    assert sum(p.numel() for p in model.parameters()) * 4 < 1_000_000
    save_dual_encoder(model, tmp_path / "ckpt")
    loaded = load_teacher(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    pixels = model.pixels([rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(2)])
    ids, mask = model.tokenize(["a photo of a bag.", "a dress"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), loaded.encode_image(pixels))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))
        assert torch.equal(model(pixels, ids, mask), loaded(pixels, ids, mask))
    assert loaded.labels == model.labels
    assert loaded.preprocess == model.preprocess


def test_embeddings_are_normalised_and_logits_scaled(tiny_model):
    pixels = torch.randn(3, 3, 28, 28)
    ids, mask = tiny_model.tokenize(["a", "b c", "a photo of a coat."])
    with torch.no_grad():
        image = tiny_model.encode_image(pixels)
        text = tiny_model.encode_text(ids, mask)
        logits = tiny_model(pixels, ids, mask)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(logits, tiny_model.logit_scale.exp() * image @ text.t(), atol=1e-5)


def test_padding_does_not_change_text_embeddings(tiny_model):
    ids, mask = tiny_model.tokenize(["a photo of a sneaker.", "bag"])
    alone_ids, alone_mask = tiny_model.tokenize(["bag"])
    with torch.no_grad():
        batch = tiny_model.encode_text(ids, mask)[1]
        alone = tiny_model.encode_text(alone_ids, alone_mask)[0]
    assert torch.allclose(batch, alone, atol=1e-5)


def test_missing_folder_is_a_named_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found: .*nowhere"):
        load_teacher(tmp_path / "nowhere")


def test_unknown_model_type_is_refused_with_what_vledge_reads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama'; vledge reads 'vledge-dual-encoder'"):
        load_teacher(tmp_path)


def test_truncated_safetensors_is_a_named_error(tmp_path, tiny_model):
    save_dual_encoder(tiny_model, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_teacher(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, tiny_model):
    save_dual_encoder(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["image_tower"]["hidden_dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit the model in its config.json"):
        load_teacher(tmp_path)


def test_unsupported_checkpoint_version_is_refused(tmp_path, tiny_model):
    save_dual_encoder(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format_version 99 is not supported"):
        load_teacher(tmp_path)
