"""Structured pruning (stage 4): physical shrinking, shapes, ONNX parity, save/load replay, config."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tiny_models import TINY_PREPROCESS, TINY_TEXT, tiny_dual_encoder, tiny_tokenizer
from vledge.compress.export import dummy_inputs, export_onnx, onnx_parity
from vledge.compress.prune import PruneConfig, apply_pruned_shapes_, count_params, prune_
from vledge.errors import CheckpointError, ConfigError
from vledge.models import hf_clip, narrow_resnet  # noqa: F401  (registers the clip and narrow_resnet towers)
from vledge.models.checkpoint import load_dual_encoder, save_dual_encoder
from vledge.models.factory import build_dual_encoder

TINY_RESNET = {"arch": "narrow_resnet", "widths": [16, 32, 32, 64], "blocks": [1, 1, 1, 1]}
HALF_RESNET = {**TINY_RESNET, "widths": [8, 16, 16, 32]}


def tiny_resnet_bert(image_tower=TINY_RESNET, text_tower=TINY_TEXT, seed=0):
    """A narrow ResNet (~0.1 MB) + the tiny BERT: residual and downsample dependencies under test."""
    torch.manual_seed(seed)
    model = build_dual_encoder(image_tower, text_tower, embed_dim=16, tokenizer=tiny_tokenizer(), preprocess=TINY_PREPROCESS)
    return model.eval()


def tiny_clip(tmp_path_factory):
    from tiny_clip import make_tiny_clip_folder

    return hf_clip.load_clip_folder(make_tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def _randomise_batchnorm_(model):
    """Non-trivial BN statistics, so a module rebuilt with fresh buffers would show in the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _outputs(model):
    with torch.no_grad():
        return model.image_tower(*dummy_inputs(model, "image")), model.text_tower(*dummy_inputs(model, "text"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """name -> (unpruned copy, model pruned at 0.5, report); each model pruned once for the module."""
    makers = {
        "resnet": tiny_resnet_bert,
        "mobilenet": lambda: tiny_dual_encoder("mobilenet"),
        "vit": lambda: tiny_dual_encoder("vit"),
        "clip": lambda: tiny_clip(tmp_path_factory),
    }
    out = {}
    for name, make in makers.items():
        model = make()
        _randomise_batchnorm_(model)
        original = copy.deepcopy(model)
        out[name] = (original, model, prune_(model, PruneConfig(ratio=0.5)))
    return out


# --- parameters fall by the expected amounts -------------------------------------------------------

# Hidden 32. One head of 16 goes: q, k, v lose 16 rows + 16 biases each, the output dense 16 columns.
# MLP 64 -> 32: the first layer loses 32 rows + 32 biases, the second 32 columns.
BERT_LAYER_DROP = 3 * (16 * 32 + 16) + 32 * 16 + (32 * 32 + 32) + 32 * 32
VIT_LAYER_DROP = (32 * 32 + 32) + 32 * 32


def test_bert_loses_half_its_heads_and_mlp_width(pruned):
    original, model, report = pruned["resnet"]
    text = report.towers["text"]
    # 2 heads of 16 -> 1 (q, k, v rows and output columns) and MLP 64 -> 32, in each of the 1 layer(s).
    assert text.params_before - text.params_after == BERT_LAYER_DROP * TINY_TEXT["num_layers"] == 4176
    attention = model.text_tower.encoder.encoder.layer[0].attention
    assert attention.self.num_attention_heads == 1 and len(text.heads_removed["encoder.encoder.layer.0.attention"]) == 1
    assert model.text_tower.encoder.encoder.layer[0].intermediate.dense.out_features == 32


def test_resnet_channels_halve_through_residuals(pruned):
    original, model, report = pruned["resnet"]
    json.dumps(report.to_dict())  # the pipeline writes it into its report
    half = tiny_resnet_bert(HALF_RESNET)
    # Every group (stem + stage-1 residual stream, each downsample stage) halves: exactly a half-width ResNet.
    assert report.towers["image"].params_after == count_params(half.image_tower)
    assert report.towers["image"].params_after < 0.3 * report.towers["image"].params_before
    assert model.image_tower.proj.in_features == 32 and model.image_tower.proj.out_features == 16
    assert report.params_before - report.params_after == sum(t.params_before - t.params_after for t in report.towers.values())


def test_mobilenet_channels_fall_and_squeeze_excite_stays_valid(pruned):
    original, model, report = pruned["mobilenet"]
    image = report.towers["image"]
    assert 0.2 < image.params_after / image.params_before < 0.35  # conv weights scale with in x out channels
    assert original.image_tower.proj.in_features == 144 and model.image_tower.proj.in_features == 72
    for block in model.image_tower.backbone.features[1:]:
        se = [m for m in block.modules() if type(m).__name__ == "SqueezeExcitation"]
        for s in se:  # excitation width must match the channels it scales
            assert s.fc2.out_channels == s.fc1.in_channels
    convs = [m for m in model.image_tower.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3]
    assert all(m.out_channels % 8 == 0 for m in convs)


def test_vit_keeps_heads_prunes_mlp_and_says_why(pruned):
    original, model, report = pruned["vit"]
    image = report.towers["image"]
    assert image.params_before - image.params_after == VIT_LAYER_DROP == 2080
    assert any("nn.MultiheadAttention" in reason for reason in image.skipped)


def test_clip_towers_prune_mlp_width_only(pruned):
    original, model, report = pruned["clip"]
    for kind in ("image", "text"):
        tower = report.towers[kind]
        # 2 layers, MLP 64 -> 32: fc1 loses 32 x (32 + 1), fc2 loses 32 x 32, per layer.
        assert tower.params_before - tower.params_after == 2 * (32 * 33 + 32 * 32)
        assert tower.heads_removed == {} and any("CLIPAttention" in reason for reason in tower.skipped)


# --- behaviour is kept where it must be -------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet", "mobilenet", "vit", "clip"])
def test_forward_shapes_unchanged_and_outputs_move(pruned, name):
    original, model, _ = pruned[name]
    (image_before, text_before), (image_after, text_after) = _outputs(original), _outputs(model)
    for before, after in ((image_before, image_after), (text_before, text_after)):  # both towers, always two
        assert after.numel() > 0 and after.shape == before.shape and torch.isfinite(after).all()
        assert not torch.allclose(after, before)  # weights really went


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "vit", "clip"])
def test_pruned_towers_export_and_match_in_onnx_runtime(pruned, name, tmp_path):
    _, model, _ = pruned[name]
    for kind in ("image", "text"):
        export_onnx(model, kind, tmp_path / f"{kind}.onnx")
        assert onnx_parity(model, kind, tmp_path / f"{kind}.onnx", dummy_inputs(model, kind, batch=3)) < 1e-4


def test_onnx_files_shrink(pruned, tmp_path):
    original, model, report = pruned["resnet"]
    for kind in ("image", "text"):
        full, small = export_onnx(original, kind, tmp_path / f"full_{kind}.onnx"), export_onnx(model, kind, tmp_path / f"{kind}.onnx")
        saved = (tmp_path / full.file).stat().st_size - (tmp_path / small.file).stat().st_size
        tower = report.towers[kind]
        # the file loses the float32 bytes of the removed weights, and the graph keeps its size
        assert saved == pytest.approx(4 * (tower.params_before - tower.params_after), rel=0.05)


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "vit", "clip"])
def test_save_load_round_trip_is_identical(pruned, name, tmp_path):
    original, model, _ = pruned[name]
    save_dual_encoder(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["image_tower"].get("pruned") or saved["text_tower"].get("pruned")
    loaded = load_dual_encoder(tmp_path / "ckpt")
    for want, got in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(want, got)
    assert count_params(loaded) == count_params(model)
    save_dual_encoder(loaded, tmp_path / "again")  # the reloaded towers still carry their record
    assert json.loads((tmp_path / "again" / "config.json").read_text())["image_tower"] == saved["image_tower"]


def test_pruning_twice_composes_and_still_reloads(tmp_path):
    model = tiny_resnet_bert(text_tower={**TINY_TEXT, "num_heads": 4})
    _randomise_batchnorm_(model)
    prune_(model, PruneConfig(ratio=0.5, round_to=1))
    second = prune_(model, PruneConfig(ratio=0.5, round_to=1))
    assert model.image_tower.proj.in_features == 16
    # 4 heads -> 2 -> 1: the second pass names its head in the original numbering, and the record merges both.
    removed = model.text_tower.config["pruned"]["heads"]["encoder.encoder.layer.0.attention"]
    assert len(removed) == 3 and set(second.towers["text"].heads_removed["encoder.encoder.layer.0.attention"]) < set(removed)
    save_dual_encoder(model, tmp_path / "ckpt")
    for want, got in zip(_outputs(model), _outputs(load_dual_encoder(tmp_path / "ckpt"))):
        assert torch.equal(want, got)


def test_ratio_zero_changes_nothing():
    model = tiny_resnet_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune_(model, PruneConfig(ratio=0.0))
    assert report.params_after == report.params_before
    assert all(t.changed == {} for t in report.towers.values())
    assert "pruned" not in model.image_tower.config and "pruned" not in model.text_tower.config
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_ignored_patterns_leave_modules_whole(caplog):
    model = tiny_resnet_bert()
    report = prune_(model, PruneConfig(ratio=0.5, ignored=("text_tower", "image_tower.backbone.layer4*", "image_tower.nothing")))
    assert "ignored pattern 'image_tower.nothing' matches no module" in caplog.text
    assert report.towers["text"].params_after == report.towers["text"].params_before
    layer4 = model.image_tower.backbone.layer4[0]
    assert layer4.conv1.out_channels == 64 and layer4.conv2.out_channels == 64
    assert model.image_tower.backbone.layer3[0].conv1.out_channels == 16


def test_only_the_chosen_parts_are_pruned():
    model = tiny_dual_encoder("vit")
    report = prune_(model, PruneConfig(ratio=0.5, parts=("attention_heads",)))
    assert report.towers["image"].params_after == report.towers["image"].params_before  # ViT: heads unsupported
    assert model.text_tower.encoder.encoder.layer[0].intermediate.dense.out_features == 64


@pytest.mark.parametrize("criterion", ["l2", "l1"])
def test_the_strongest_units_and_heads_survive(criterion):
    model = tiny_dual_encoder("vit")
    mlp = model.image_tower.backbone.encoder.layers[0].mlp
    attention = model.text_tower.encoder.encoder.layer[0].attention
    with torch.no_grad():
        mlp[0].weight[1::2] *= 10  # odd hidden units are strong
        attention.self.value.weight[:16] *= 10  # head 0 is strong
    strong_rows = mlp[0].weight[1::2].clone()
    report = prune_(model, PruneConfig(ratio=0.5, criterion=criterion))
    assert torch.equal(model.image_tower.backbone.encoder.layers[0].mlp[0].weight, strong_rows)
    assert report.towers["text"].heads_removed == {"encoder.encoder.layer.0.attention": [1]}


def test_recovery_steps_reduce_the_embedding_error():
    from vledge.compress.distil.losses import embedding_mimic_loss

    original = tiny_resnet_bert()
    _randomise_batchnorm_(original)
    student = copy.deepcopy(original)
    prune_(student, PruneConfig(ratio=0.5))
    # The image tower: pruning moved its embeddings far (1 - cosine ~0.7); the tiny text tower's hardly move.
    pixels = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = original.encode_image(pixels)
    optimizer = torch.optim.Adam(student.image_tower.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):  # BatchNorm stays in eval mode: the statistics are the teacher's
        loss = embedding_mimic_loss(student.encode_image(pixels), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.2 and losses[-1] < 0.5 * losses[0]


# --- the record and its replay ------------------------------------------------------------------------

def test_replay_rejects_a_record_that_does_not_fit():
    model = tiny_resnet_bert()
    config = {"arch": "narrow_resnet", "pruned": {"version": 1, "modules": {"backbone.layer9.conv1": {"type": "Conv2d"}}}}
    with pytest.raises(CheckpointError, match=r"names module 'backbone.layer9.conv1', which this architecture lacks"):
        apply_pruned_shapes_(model.image_tower, config)
    config["pruned"] = {"version": 1, "modules": {"backbone.bn1": {"type": "Conv2d"}}}
    with pytest.raises(CheckpointError, match=r"backbone.bn1 is a BatchNorm2d but the pruned-shape record says 'Conv2d'"):
        apply_pruned_shapes_(model.image_tower, config)
    config["pruned"] = {"version": 7}
    with pytest.raises(CheckpointError, match="pruned-shape record version 7 is not supported"):
        apply_pruned_shapes_(model.image_tower, config)


def test_replay_twice_changes_nothing(pruned):
    _, model, _ = pruned["resnet"]
    fresh = tiny_resnet_bert()
    for kind in ("image_tower", "text_tower"):
        tower, config = getattr(fresh, kind), getattr(model, kind).config
        apply_pruned_shapes_(tower, config)
        shapes = {k: v.shape for k, v in tower.state_dict().items()}
        apply_pruned_shapes_(tower, config)
        assert {k: v.shape for k, v in tower.state_dict().items()} == shapes
        assert shapes == {k: v.shape for k, v in getattr(model, kind).state_dict().items()}


# --- PruneConfig ----------------------------------------------------------------------------------------

def test_config_json_round_trip():
    config = PruneConfig(ratio=0.4, parts=["mlp_width", "conv_channels"], criterion="l1", ignored=["text_tower"], round_to=4)
    again = PruneConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.parts == ("mlp_width", "conv_channels") and config.to_dict()["version"] == 1


@pytest.mark.parametrize("ratio", [1.0, -0.1, float("nan"), "0.5", True])
def test_invalid_ratio_is_a_config_error(ratio):
    with pytest.raises(ConfigError, match=r"PruneConfig.ratio must be a number with 0 <= ratio < 1 .*got"):
        PruneConfig(ratio=ratio)


def test_invalid_config_fields_say_what_to_do():
    with pytest.raises(ConfigError, match=r"unknown part 'mlp_widht'. Did you mean 'mlp_width'\?"):
        PruneConfig(parts=("mlp_widht",))
    with pytest.raises(ConfigError, match="criterion must be one of l2, l1, got 'l3'"):
        PruneConfig(criterion="l3")
    with pytest.raises(ConfigError, match="round_to must be a positive integer"):
        PruneConfig(round_to=0)
    with pytest.raises(ConfigError, match=r"unknown key 'raito'. Did you mean 'ratio'\?"):
        PruneConfig.from_dict({"raito": 0.5})
    with pytest.raises(ConfigError, match="version 2 is not supported"):
        PruneConfig.from_dict({"version": 2, "ratio": 0.5})
