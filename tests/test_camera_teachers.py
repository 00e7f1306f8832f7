"""benchmarks/camera_teachers.py: the camera-sized teachers' recipes, on the tests' 224-px CLIP (under 1 MB)."""

import importlib.util
import json
from pathlib import Path

import pytest

from vledge.compress.students.reference import REFERENCE_TEACHERS

pytestmark = pytest.mark.usefixtures("one_thread")


def camera_teachers():
    path = Path(__file__).parents[1] / "benchmarks" / "camera_teachers.py"
    spec = importlib.util.spec_from_file_location("camera_teachers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return camera_teachers()


@pytest.fixture(scope="module")
def tiny_folder(script, tmp_path_factory):
    return script.build_teacher(script.TEST_TEACHER, tmp_path_factory.mktemp("camera"))


def test_tiny_teacher_is_a_224_px_clip_folder_under_a_megabyte(script, tiny_folder):
    size = sum(f.stat().st_size for f in tiny_folder.iterdir())
    assert size < 1_000_000
    checked = script.check_teacher(tiny_folder)
    assert (checked["image_size"], checked["max_length"], checked["embed_dim"]) == (224, 77, 16)
    assert json.loads((tiny_folder / "config.json").read_text())["model_type"] == "clip"


def test_every_folder_and_the_cache_say_the_weights_are_random(script, tiny_folder):
    marker = json.loads((tiny_folder / script.MARKER).read_text())
    assert "random weights" in marker["weights"] and "timing only" in marker["weights"]
    assert "RANDOM WEIGHTS" in (tiny_folder.parent / "README.md").read_text()
    assert json.loads((tiny_folder.parent / "teachers.json").read_text())["teachers"] == [script.TEST_TEACHER]


def test_a_cached_teacher_is_reused_and_a_changed_recipe_rebuilds_it(script, tiny_folder):
    weights = tiny_folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert script.build_teacher(script.TEST_TEACHER, tiny_folder.parent) == tiny_folder
    assert weights.stat().st_mtime_ns == before
    script.build_teacher(script.TEST_TEACHER, tiny_folder.parent, seed=1)
    assert json.loads((tiny_folder / script.MARKER).read_text())["recipe"]["seed"] == 1


def test_tokenizer_has_the_configured_vocabulary_with_eos_last(tiny_folder):
    from transformers import CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast.from_pretrained(str(tiny_folder), local_files_only=True)
    vocab = REFERENCE_TEACHERS.get("tiny-clip-224").vocab_size
    assert len(tokenizer) == vocab and tokenizer.eos_token_id == vocab - 1
    assert len(tokenizer("a photo of a sneaker")["input_ids"]) == 2 + 5  # learned merges: one token a word


def test_bpe_merges_take_the_most_frequent_pair_first(script):
    assert script.learn_merges(["ab", "ab", "cd"], 2) == [("a", "b</w>"), ("c", "d</w>")]


def test_camera_recipes_have_the_published_clip_shapes():
    b32, b16 = REFERENCE_TEACHERS.get("clip-vit-b32"), REFERENCE_TEACHERS.get("clip-vit-b16")
    vision, text = b32.image_tower["hf_config"], b32.text_tower["hf_config"]
    assert (vision["hidden_size"], vision["num_hidden_layers"], vision["patch_size"], vision["image_size"]) == (768, 12, 32, 224)
    assert (text["hidden_size"], text["num_hidden_layers"], text["max_position_embeddings"], text["vocab_size"]) == (512, 12, 77, 49408)
    assert b16.image_tower["hf_config"]["patch_size"] == 16 and b32.embed_dim == b16.embed_dim == 512
