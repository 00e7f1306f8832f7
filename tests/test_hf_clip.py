"""Hugging Face CLIPModel folders behind the DualEncoder interface: weights, tokenizer, preprocessing, export."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_clip import MAX_LENGTH, make_tiny_clip_folder
from vledge.errors import CheckpointError
from vledge.images import preprocess
from vledge.models import load_dual_encoder, load_teacher, save_dual_encoder
from vledge.models.dual_encoder import DualEncoder
from vledge.models.hf_clip import ClipImageTower, ClipTextTower, load_clip_folder

TEXTS = ["a photo of a cat", "a dog", "Ünï 🙂", "x" * 10_000]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip_folder(tmp_path_factory.mktemp("clip"))


@pytest.fixture
def clip_copy(clip_dir, tmp_path):
    return shutil.copytree(clip_dir, tmp_path / "clip")


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _inputs(model, texts=TEXTS, pad_to_max=False):
    ids, mask = model.tokenizer(texts, pad_to_max=pad_to_max)
    pixels = torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    return pixels, torch.from_numpy(ids), torch.from_numpy(mask)


def test_logits_and_features_equal_clipmodel(clip_dir):
    from transformers import CLIPModel

    model = load_teacher(clip_dir)
    reference = CLIPModel.from_pretrained(clip_dir).eval()
    assert isinstance(model, DualEncoder) and model.source["kind"] == "hf-clip"
    assert model.logit_scale.item() == pytest.approx(3.0)  # from the weights, not the config's 2.6592
    assert model.embed_dim == 16
    pixels, ids, mask = _inputs(model)
    with torch.no_grad():
        got = model(pixels, ids, mask)
        want = reference(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits_per_image
        image_gap = model.encode_image(pixels, normalize=False) - reference.get_image_features(pixels)
        text_gap = model.encode_text(ids, mask, normalize=False) - reference.get_text_features(ids, mask)
    assert got.shape == (3, len(TEXTS))
    assert (got - want).abs().max().item() < 1e-5
    assert image_gap.abs().max().item() < 1e-5 and text_gap.abs().max().item() < 1e-5


def test_tokenizer_matches_clip_tokenizer_truncates_and_handles_unicode(clip_dir):
    from transformers import CLIPTokenizerFast

    model = load_teacher(clip_dir)
    reference = CLIPTokenizerFast.from_pretrained(clip_dir)
    assert model.tokenizer.spec.kind == "bpe" and model.tokenizer.spec.max_length == MAX_LENGTH
    assert model.tokenizer.spec.pad_id == reference.pad_token_id
    ids, mask = model.tokenizer(TEXTS)
    assert ids.shape == (len(TEXTS), MAX_LENGTH) and ids.dtype == np.int64
    for row, text in enumerate(TEXTS):
        want = reference(text, truncation=True, max_length=MAX_LENGTH).input_ids
        assert ids[row, : mask[row].sum()].tolist() == want
    assert ids[3, -1] == reference.eos_token_id  # the 10,000-char text keeps its EOS after truncation
    emoji_row = ids[2, : mask[2].sum()].tolist()
    assert reference.decode(emoji_row, skip_special_tokens=True).strip() == "ünï 🙂"


def test_tokenizer_built_from_vocab_and_merges(clip_dir, clip_copy):
    (clip_copy / "tokenizer.json").unlink()
    rebuilt = load_teacher(clip_copy).tokenizer(TEXTS)
    original = load_teacher(clip_dir).tokenizer(TEXTS)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, original))


def test_preprocess_spec_matches_clip_image_processor(clip_dir):
    from transformers import CLIPImageProcessor

    spec = load_teacher(clip_dir).preprocess
    assert (spec.image_size, spec.resize_to, spec.interpolation) == (30, 34, "bicubic")
    assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    processor = CLIPImageProcessor.from_pretrained(clip_dir)
    rng = np.random.default_rng(0)
    for shape in [(50, 41, 3), (20, 90, 3)]:
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        want = processor(image, return_tensors="np").pixel_values
        assert np.abs(preprocess(image, spec) - want).max() < 1e-5


def test_preprocess_resample_codes(clip_copy):
    path = clip_copy / "preprocessor_config.json"
    _edit_json(path, lambda c: c.update(resample=2))
    assert load_teacher(clip_copy).preprocess.interpolation == "bilinear"
    _edit_json(path, lambda c: c.update(resample=0))
    with pytest.raises(CheckpointError, match=r"resample 0 is not supported; use 3 \(bicubic\) or 2 \(bilinear\)"):
        load_teacher(clip_copy)


def test_pickle_only_folder_refused_unless_allowed(clip_dir, clip_copy):
    from safetensors.torch import load_file

    torch.save(load_file(clip_copy / "model.safetensors"), clip_copy / "pytorch_model.bin")
    (clip_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds only pickle weights \(pytorch_model.bin\).*allow_pickle=True"):
        load_teacher(clip_copy)
    pixels, ids, mask = _inputs(load_teacher(clip_dir))
    with torch.no_grad():
        want = load_teacher(clip_dir)(pixels, ids, mask)
        got = load_teacher(clip_copy, allow_pickle=True)(pixels, ids, mask)
    assert torch.equal(got, want)


def test_sharded_safetensors(clip_dir, clip_copy):
    from safetensors.torch import load_file, save_file

    state = load_file(clip_copy / "model.safetensors")
    (clip_copy / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-1.safetensors": names[::2], "model-2.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, clip_copy / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (clip_copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    pixels, ids, mask = _inputs(load_teacher(clip_dir))
    with torch.no_grad():
        assert torch.equal(load_teacher(clip_copy)(pixels, ids, mask), load_teacher(clip_dir)(pixels, ids, mask))


def test_truncated_safetensors(clip_copy):
    weights = clip_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: it is truncated or not a safetensors file"):
        load_teacher(clip_copy)


def test_unknown_model_type(clip_copy):
    _edit_json(clip_copy / "config.json", lambda c: c.update(model_type="siglip"))
    with pytest.raises(CheckpointError, match="has model_type 'siglip'; vledge reads"):
        load_teacher(clip_copy)


def test_hub_id_is_not_a_folder():
    with pytest.raises(CheckpointError, match="is not a local folder.*never downloads from the Hub"):
        load_clip_folder("openai/clip-vit-base-patch32")


def test_missing_tokenizer(clip_copy):
    for name in ("tokenizer.json", "vocab.json"):
        (clip_copy / name).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer in .*: expected tokenizer.json, or vocab.json and"):
        load_teacher(clip_copy)


@pytest.mark.parametrize("legacy_eos", [False, True], ids=["eos-token-id", "legacy-argmax"])
def test_eos_pooling_ignores_padding_and_exports_to_onnx(clip_copy, tmp_path, legacy_eos):
    from vledge.compress.export import export_onnx, onnx_parity

    if legacy_eos:  # configs from before transformers PR #24773 pool at the argmax of the ids
        _edit_json(clip_copy / "config.json", lambda c: c["text_config"].update(eos_token_id=2))
    model = load_teacher(clip_copy)
    assert model.text_tower.encoder.text_model.eos_token_id == (2 if legacy_eos else model.tokenizer.spec.pad_id)
    _, ids, mask = _inputs(model, pad_to_max=True)
    assert (mask == 0).any()  # the batch really is padded
    with torch.no_grad():
        padded = model.text_tower(ids, mask)
        alone = torch.cat([model.text_tower(*model.tokenize([text])) for text in TEXTS])
    assert (padded - alone).abs().max().item() < 1e-5
    export_onnx(model, "text", tmp_path / "text.onnx")
    assert onnx_parity(model, "text", tmp_path / "text.onnx", (ids, mask)) < 1e-4
    short_ids, short_mask = model.tokenize(TEXTS[:2])  # a sequence length other than the traced one
    assert short_ids.shape[1] < MAX_LENGTH
    assert onnx_parity(model, "text", tmp_path / "text.onnx", (short_ids, short_mask)) < 1e-4
    export_onnx(model, "image", tmp_path / "image.onnx")
    assert onnx_parity(model, "image", tmp_path / "image.onnx", _inputs(model)[:1]) < 1e-4


def test_exported_text_tower_runs_in_openvino(clip_dir, tmp_path):
    ov = pytest.importorskip("openvino")
    from vledge.compress.export import export_onnx

    model = load_teacher(clip_dir)
    export_onnx(model, "text", tmp_path / "text.onnx")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(tmp_path / "text.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    _, ids, mask = _inputs(model)
    got = compiled({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[compiled.output(0)]
    with torch.no_grad():
        want = model.text_tower(ids, mask).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_clip_towers_round_trip_through_vledge_checkpoint(clip_dir, tmp_path):
    teacher = load_teacher(clip_dir)
    shrink = lambda tower: {**tower.config, "hf_config": {**tower.config["hf_config"], "num_hidden_layers": 1}}
    torch.manual_seed(0)
    student = DualEncoder(
        ClipImageTower(shrink(teacher.image_tower), 16), ClipTextTower(shrink(teacher.text_tower), 16),
        preprocess=teacher.preprocess, tokenizer=teacher.tokenizer,
    ).eval()
    for model, folder in ((teacher, tmp_path / "teacher"), (student, tmp_path / "student")):
        save_dual_encoder(model, folder)
        config = json.loads((folder / "config.json").read_text())
        assert (config["image_tower"]["arch"], config["text_tower"]["arch"]) == ("clip-vision", "clip-text")
        loaded = load_dual_encoder(folder)
        assert loaded.tokenizer.spec == model.tokenizer.spec and loaded.preprocess == model.preprocess
        pixels, ids, mask = _inputs(model)
        with torch.no_grad():
            assert torch.equal(loaded(pixels, ids, mask), model(pixels, ids, mask))
    assert len(student.text_tower.encoder.text_model.encoder.layers) == 1
