"""Fault injection, checkpoints: corrupt weights and configs, pickles, remote code, LoRA adapters.

Already covered elsewhere (not repeated here): a missing folder, an unknown model_type and truncated
safetensors (test_models, test_hf_clip), pickle-only weights refused then loaded when allowed
(test_hf_clip, test_lora), adapters whose base does not match (test_lora).
"""

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from faults import assert_clean_failure, run_vledge
from tiny_clip import make_tiny_clip_folder
from tiny_models import tiny_dual_encoder
from vledge.errors import CheckpointError
from vledge.models import load_teacher, save_dual_encoder


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {"own": save_dual_encoder(tiny_dual_encoder(), root / "own"), "clip": make_tiny_clip_folder(root / "clip")}


@pytest.fixture
def own(originals, tmp_path):
    return Path(shutil.copytree(originals["own"], tmp_path / "own"))


@pytest.fixture
def clip(originals, tmp_path):
    return Path(shutil.copytree(originals["clip"], tmp_path / "clip"))


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


# --- corrupt weights

CORRUPTIONS = {
    "empty file": lambda data: b"",
    "random bytes": lambda data: bytes(range(256)) * 16,
    "header length past the end": lambda data: struct.pack("<Q", 2**40) + data[8:],
    "header not JSON": lambda data: data[:8] + b"{" * header_length(data) + data[8 + header_length(data):],
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("kind", ["own", "clip"])
def test_corrupt_safetensors_is_a_named_error(kind, corruption, request):
    folder = request.getfixturevalue(kind)
    weights = folder / "model.safetensors"
    weights.write_bytes(CORRUPTIONS[corruption](weights.read_bytes()))
    with pytest.raises(CheckpointError, match=r"model.safetensors: it is truncated or not a safetensors file \("):
        load_teacher(folder)


def test_flipped_bytes_in_vledge_weights_fail_the_recorded_sha256(own):
    # safetensors checks only its header: without the recorded hash these weights would load silently.
    weights = own / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors does not match the sha256 in its config.json: "
                                              r"the file is corrupt or was changed after saving"):
        load_teacher(own)


def test_checkpoints_without_a_recorded_hash_still_load(own):
    edit_json(own / "config.json", lambda c: c.pop("weights_sha256"))  # written before the hash was recorded
    assert load_teacher(own).embed_dim == 16


# --- malformed configs: each a CheckpointError naming the file, never a TypeError from deep inside


@pytest.mark.parametrize("kind, file, change, message", [
    ("own", "config.json", lambda c: c["image_tower"].update(hidden_dim="wide"),
     r"config.json is missing or has a malformed field: ValueError\(\"invalid literal for int"),
    ("own", "config.json", lambda c: c.update(embed_dim=None),
     r"config.json is missing or has a malformed field: TypeError"),
    ("own", "config.json", lambda c: c["tokenizer"].update(file="../../etc/passwd"),
     r"config.json names tokenizer file '../../etc/passwd' outside its folder"),
    ("own", "preprocessor_config.json", lambda c: c.update(interpolation="nearest"),
     r"preprocessor_config.json has a malformed field: interpolation must be one of \['bicubic', 'bilinear'\]"),
    ("clip", "config.json", lambda c: c["vision_config"].update(hidden_size="big"),
     r"config.json is not a valid CLIP config: "),
    ("clip", "config.json", lambda c: c["text_config"].update(num_attention_heads=5),
     r"config.json is not a valid CLIP config: embed_dim must be divisible by num_heads"),
    # A config that does not belong to its weights: its model is sized on torch's meta device, never allocated.
    ("own", "config.json", lambda c: c["text_tower"].update(hidden_size=100_000, intermediate_size=400_000),
     r"config.json describes a model of [\d,.]+M parameters, but the weights in .* hold [\d.]+ MB .*refusing to allocate it"),
    ("clip", "config.json", lambda c: c["vision_config"].update(hidden_size=64_000, intermediate_size=256_000),
     r"config.json describes a model of [\d,.]+M parameters, but the weights in .* hold [\d.]+ MB"),
    ("clip", "preprocessor_config.json", lambda c: c.update(crop_size="large"),
     r"preprocessor_config.json has a malformed field: ValueError\(\"invalid literal for int"),
    ("clip", "preprocessor_config.json", lambda c: c.update(image_mean=[0.5]),
     r"preprocessor_config.json has a malformed field: ConfigError\('mean and std need three values each"),
])
def test_malformed_config_fields_name_the_file(kind, file, change, message, request):
    folder = request.getfixturevalue(kind)
    edit_json(folder / file, change)
    with pytest.raises(CheckpointError, match=message):
        load_teacher(folder)


@pytest.mark.parametrize("kind, file", [("own", "config.json"), ("own", "preprocessor_config.json"),
                                        ("clip", "config.json"), ("clip", "tokenizer_config.json")])
def test_json_that_is_not_an_object(kind, file, request):
    folder = request.getfixturevalue(kind)
    (folder / file).write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match=rf"{file} must hold a JSON object, not a list"):
        load_teacher(folder)


def test_corrupt_bpe_merges_are_a_named_error(clip):
    (clip / "tokenizer.json").unlink()  # the tokenizer is then built from vocab.json + merges.txt
    (clip / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(CheckpointError, match=r"cannot build the CLIP tokenizer from .*vocab.json and merges.txt"):
        load_teacher(clip)


# --- pickles are never unpickled beyond plain tensors, remote code never runs


def test_malicious_pickle_is_refused_even_when_pickles_are_allowed(clip, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (clip / "model.safetensors").unlink()
    torch.save({"vision_model.embeddings.patch_embedding.weight": Payload()}, clip / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"holds only pickle weights \(pytorch_model.bin\)"):
        load_teacher(clip)
    with pytest.raises(CheckpointError) as info:
        load_teacher(clip, allow_pickle=True)
    message = str(info.value)
    assert "holds objects other than tensors, which torch.load(weights_only=True) will not unpickle" in message
    assert "posix.system" in message and "convert the file to safetensors in a place you trust" in message
    assert "weights_only` set to `False`" not in message  # torch's advice, the one thing not to do
    assert not marker.exists()


def test_remote_code_in_a_folder_never_runs(clip, tmp_path):
    marker = tmp_path / "imported"
    (clip / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast\n"
        "class EvilConfig(CLIPConfig): pass\nclass EvilModel(CLIPModel): pass\nclass EvilTok(CLIPTokenizerFast): pass\n"
    )
    edit_json(clip / "config.json", lambda c: c.update(auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}))
    edit_json(clip / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": ["evil.EvilTok", "evil.EvilTok"]}))
    (clip / "tokenizer.json").unlink()  # forces the tokenizer build through transformers
    assert load_teacher(clip).embed_dim == 16
    edit_json(clip / "config.json", lambda c: c.update(model_type="evil"))
    with pytest.raises(CheckpointError, match=r"has model_type 'evil'; vledge reads 'vledge-dual-encoder'"):
        load_teacher(clip)
    assert not marker.exists()


# --- LoRA adapter folders


@pytest.fixture
def adapter(own, tmp_path):
    from vledge.models.lora import add_lora, save_adapter

    return save_adapter(add_lora(load_teacher(own)), tmp_path / "adapter", own)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(peft_type="IA3"), r"adapter_config.json: peft_type 'IA3'; vledge merges LoRA adapters only"),
    (lambda c: c.update(r="eight"), r"adapter_config.json: r must be a positive number, got 'eight'"),
    (lambda c: c.update(lora_alpha=None), r"adapter_config.json: lora_alpha must be a positive number, got None"),
    (lambda c: c.update(target_modules=[]), r"adapter_config.json lists no target_modules"),
])
def test_malformed_adapter_config(adapter, change, message):
    edit_json(adapter / "adapter_config.json", change)
    with pytest.raises(CheckpointError, match=message):
        load_teacher(adapter)


def test_truncated_adapter_weights(adapter):
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: it is truncated or not a safetensors file"):
        load_teacher(adapter)


# --- the command line: a clean message, and the opt-in flag


def test_cli_refuses_pickles_cleanly_and_allow_pickle_opts_in(clip, tmp_path, capsys):
    from safetensors.torch import load_file

    from vledge.cli import main

    torch.save(load_file(clip / "model.safetensors"), clip / "pytorch_model.bin")
    (clip / "model.safetensors").unlink()
    refused = run_vledge("eval", clip, "--data", "digits", "--max-samples", "8")
    assert_clean_failure(refused, "eval", "holds only pickle weights (pytorch_model.bin)", "(--allow-pickle)")
    assert main(["-q", "eval", str(clip), "--data", "digits", "--max-samples", "8", "--allow-pickle",
                 "--json", str(tmp_path / "metrics.json")]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["images"] == 8


def test_torch_runtime_takes_the_opt_in_too(clip):
    import vledge
    from safetensors.torch import load_file

    torch.save(load_file(clip / "model.safetensors"), clip / "pytorch_model.bin")
    (clip / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds only pickle weights"):
        vledge.load(clip, backend="torch")
    assert vledge.load(clip, backend="torch", allow_pickle=True).encode_text("a cat").shape == (1, 16)


def test_cli_malformed_checkpoint_is_a_clean_message(own):
    (own / "config.json").write_text("[]")
    assert_clean_failure(run_vledge("eval", own, "--data", "digits"), "eval", "config.json must hold a JSON object")
