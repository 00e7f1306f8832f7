"""LoRA adapters: add, save, load, merge (merged == unmerged), and the errors of a mismatching adapter."""

import json

import pytest
import torch

from tiny_clip import make_tiny_clip_folder
from tiny_models import tiny_dual_encoder
from vledge.errors import CheckpointError, ConfigError
from vledge.models import load_teacher, save_dual_encoder
from vledge.models.dual_encoder import DualEncoder
from vledge.models.lora import ADAPTER_CONFIG, add_lora, default_target_modules, merge_adapter_, save_adapter


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip_folder(tmp_path_factory.mktemp("clip"))


def _randomise_lora_(peft_model, seed=1):
    """A fresh adapter has B = 0 and changes nothing: give A and B real values so merging can go wrong."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def _inputs(model):
    ids, mask = model.tokenize(["a photo of a shirt", "a bag", "Ünï 🙂 coat"])
    size = model.preprocess.image_size
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)), ids, mask


def _logits(model, inputs):
    with torch.no_grad():
        return model(*inputs)


def _trained_adapter(base, base_dir, out_dir, **lora_args):
    """Add LoRA to ``base``, randomise it, save it; returns the unmerged model's logits."""
    peft_model = add_lora(base, **lora_args)
    _randomise_lora_(peft_model)
    peft_model.eval()
    logits = _logits(peft_model, _inputs(base))
    save_adapter(peft_model, out_dir, base_dir)
    return logits


def _assert_no_lora(model):
    assert type(model) is DualEncoder
    assert not [name for name, _ in model.named_modules() if "lora" in name or "base_layer" in name]


@pytest.mark.parametrize("image", ["vit", "mobilenet"])
def test_merged_vledge_model_equals_unmerged(tmp_path, image):
    base_dir = save_dual_encoder(tiny_dual_encoder(image), tmp_path / "base")
    base = load_teacher(base_dir)
    inputs = _inputs(base)
    before = _logits(base, inputs)
    targets = default_target_modules(base)
    assert "image_tower.proj" in targets and "text_tower.proj" in targets
    assert any(t.endswith("attention.self.query") for t in targets)
    assert not any(t.startswith("image_tower.backbone") for t in targets)  # vit / CNN towers: proj only
    unmerged = _trained_adapter(base, base_dir, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [ADAPTER_CONFIG, "adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == str(base_dir.resolve())

    merged = load_teacher(tmp_path / "adapter")  # the adapter folder alone names its base
    _assert_no_lora(merged)
    assert all(p.requires_grad for p in merged.parameters())  # as loaded: PEFT's freezing does not leak
    assert merged.labels == base.labels and merged.tokenizer.spec == base.tokenizer.spec
    assert merged.source["adapter"] == str(tmp_path / "adapter")
    after = _logits(merged, inputs)
    assert (after - unmerged).abs().max().item() < 1e-5
    assert (after - before).abs().max().item() > 1e-2  # the adapter really changed the model


def test_merged_clip_equals_unmerged(clip_dir, tmp_path):
    base = load_teacher(clip_dir)
    targets = default_target_modules(base)
    assert len([t for t in targets if t.endswith(("q_proj", "v_proj"))]) == 8  # 2 towers x 2 layers x q, v
    unmerged = _trained_adapter(base, clip_dir, tmp_path / "adapter", r=4, alpha=8)
    merged = load_teacher(clip_dir, adapter=tmp_path / "adapter")
    _assert_no_lora(merged)
    assert (_logits(merged, _inputs(merged)) - unmerged).abs().max().item() < 1e-5


def test_peft_adapter_trained_on_hf_clipmodel_merges(clip_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    targets = ["q_proj", "v_proj", "visual_projection", "text_projection"]
    peft_model = get_peft_model(CLIPModel.from_pretrained(clip_dir), LoraConfig(r=4, target_modules=targets))
    _randomise_lora_(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = load_teacher(clip_dir, adapter=tmp_path / "adapter")
    _assert_no_lora(merged)
    pixels, ids, mask = _inputs(merged)
    with torch.no_grad():
        want = peft_model.eval()(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits_per_image
    assert (_logits(merged, (pixels, ids, mask)) - want).abs().max().item() < 1e-5


def test_adapter_with_other_shapes_is_refused_and_base_left_intact(tmp_path):
    wide_dir = save_dual_encoder(tiny_dual_encoder(embed_dim=16), tmp_path / "wide")
    _trained_adapter(load_teacher(wide_dir), wide_dir, tmp_path / "adapter")
    narrow = tiny_dual_encoder(embed_dim=8)
    before = _logits(narrow, _inputs(narrow))
    message = r"adapter .* does not match base .*: image_tower.proj has shape \(16, 8\) in the adapter but \(8, 8\)"
    with pytest.raises(CheckpointError, match=message):
        merge_adapter_(narrow, tmp_path / "adapter")
    _assert_no_lora(narrow)
    assert torch.equal(_logits(narrow, _inputs(narrow)), before)


def test_adapter_for_another_architecture_is_refused(clip_dir, tmp_path):
    base_dir = save_dual_encoder(tiny_dual_encoder(), tmp_path / "bert")
    _trained_adapter(load_teacher(base_dir), base_dir, tmp_path / "adapter")
    message = r"does not match base .*: module text_tower.encoder.encoder.layer.0.attention.self.query is not in"
    with pytest.raises(CheckpointError, match=message):
        load_teacher(clip_dir, adapter=tmp_path / "adapter")


def test_adapter_naming_a_hub_id_or_missing_folder(tmp_path):
    base_dir = save_dual_encoder(tiny_dual_encoder(), tmp_path / "base")
    _trained_adapter(load_teacher(base_dir), base_dir, tmp_path / "adapter")
    config_path = tmp_path / "adapter" / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "base_model_name_or_path": "openai/clip-vit-base-patch32"}))
    with pytest.raises(
        CheckpointError,
        match=r"names base model 'openai/clip-vit-base-patch32' .* not a local folder\. vledge loads local folders "
        r"only.*load_teacher\(<base folder>, adapter=",
    ):
        load_teacher(tmp_path / "adapter")
    config_path.write_text(json.dumps({**config, "base_model_name_or_path": "../base"}))  # relative to the adapter
    _assert_no_lora(load_teacher(tmp_path / "adapter"))


def test_pickle_adapter_refused_unless_allowed(tmp_path):
    from safetensors.torch import load_file

    base_dir = save_dual_encoder(tiny_dual_encoder(), tmp_path / "base")
    unmerged = _trained_adapter(load_teacher(base_dir), base_dir, tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(weights), tmp_path / "adapter" / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"holds only pickle weights \(adapter_model.bin\).*allow_pickle=True"):
        load_teacher(tmp_path / "adapter")
    merged = load_teacher(tmp_path / "adapter", allow_pickle=True)
    assert (_logits(merged, _inputs(merged)) - unmerged).abs().max().item() < 1e-5


def test_add_lora_with_unknown_targets():
    with pytest.raises(ConfigError, match=r"cannot add LoRA with target_modules \['nowhere'\]"):
        add_lora(tiny_dual_encoder(), target_modules=["nowhere"])
