"""The teacher-output cache: served without a teacher forward, invalidated by a changed teacher or data set,
rebuilt when a shard is truncated or corrupt, written so that an interruption leaves no half shard."""

import copy
import json
import logging

import numpy as np
import pytest
import torch

from tiny_models import teacher_reference, tiny_dual_encoder
from vledge.compress.distil import DistillConfig, TeacherCache, cache_files, distill
from vledge.compress.students import StudentSpec, build_student
from vledge.data import load_dataset
from vledge.data.base import Subset
from vledge.images import PreprocessSpec

ROWS = 256  # 1438 digits -> 6 shards
STUDENT = StudentSpec("tiny-vit", "", {"arch": "vit", "patch_size": 7, "num_layers": 1, "num_heads": 2, "hidden_dim": 16,
                                        "mlp_dim": 32}, {"shrink": {"depth": 1, "width": 0.5}})
FAST = DistillConfig(epochs=2, batch_size=128, patience=None, max_samples=None, num_threads=1)
TEXTS = ["a photo of the digit one.", "a handwritten digit two.", "something never seen before"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    return tiny_dual_encoder("vit", seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def open_cache(root, teacher, data, **kwargs):
    return TeacherCache(root, teacher, data, shard_rows=ROWS, **kwargs)


def everything(data, spec):
    return data.batch(np.arange(len(data)), spec)


def count_forwards(monkeypatch, model) -> dict:
    calls = {"image": 0, "text": 0}
    for kind in calls:
        method = getattr(model, f"encode_{kind}")

        def counted(*args, _method=method, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _method(*args, **kwargs)

        monkeypatch.setattr(model, f"encode_{kind}", counted)
    return calls


def test_the_cache_holds_the_teachers_embeddings_in_shards(tmp_path, teacher, digits):
    cache = open_cache(tmp_path, teacher, digits)
    stats = cache.build()
    assert (stats.images_computed, stats.texts_computed, stats.image_hits) == (len(digits), 40, 0)  # 10 classes x 4 templates
    batch = digits.batch(np.arange(250, 300), teacher.preprocess)  # across the first two shards
    images, texts = cache(batch, TEXTS)
    want_images, want_texts = teacher_reference(teacher, batch, TEXTS)
    assert torch.allclose(images, want_images, atol=1e-6) and torch.allclose(texts, want_texts, atol=1e-6)
    files = sorted(p.name for p in cache.folder.iterdir())
    assert files == ["cache.json"] + [f"images-{i:05d}.safetensors" for i in range(6)] + ["texts.safetensors"]
    description = json.loads((cache.folder / "cache.json").read_text())
    assert description["data"]["source"].startswith("digits/train") and description["shard_rows"] == ROWS


def test_a_warm_cache_runs_no_teacher_forward(tmp_path, teacher, digits, monkeypatch):
    open_cache(tmp_path, teacher, digits).build()
    live = distill(build_student(STUDENT, teacher, seed=0), teacher, digits, FAST)
    calls = count_forwards(monkeypatch, teacher)
    cache = open_cache(tmp_path, teacher, digits)  # another run: everything comes from disk
    cached = distill(build_student(STUDENT, teacher, seed=0), teacher, digits, FAST, teacher_forward=cache)
    assert calls == {"image": 0, "text": 0}
    assert cache.stats.images_computed == 0 and cache.stats.texts_computed == 0
    assert cache.stats.image_hits == 2 * cached.train_images + cached.val_images  # two epochs, held-out once
    for a, b in zip(live.history, cached.history):  # the same student as with the teacher itself
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_a_changed_teacher_invalidates_the_cache(tmp_path, teacher, digits):
    first = open_cache(tmp_path, teacher, digits)
    first.build()
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.image_tower.proj.weight[0, 0] += 0.5  # one weight
    cache = open_cache(tmp_path, changed, digits)
    assert cache.folder != first.folder
    assert cache.build().images_computed == len(digits)
    batch = digits.batch(np.arange(40), teacher.preprocess)
    with torch.no_grad():
        want, stale = (m.encode_image(torch.from_numpy(batch.pixels)) for m in (changed, teacher))
    got = torch.from_numpy(cache.images(batch))
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, stale, atol=1e-3)


def test_another_data_set_subset_or_preprocessing_has_its_own_cache(tmp_path, teacher, digits):
    folders = {
        open_cache(tmp_path, teacher, data, spec=spec).folder
        for data in (digits, Subset(digits, range(500)), Subset(digits, range(1, 501)), load_dataset("digits", "test"))
        for spec in (teacher.preprocess, PreprocessSpec(image_size=28, mean=(0.5,) * 3, std=(0.5,) * 3))
    }
    assert len(folders) == 8


def test_changed_images_under_the_same_name_are_recomputed_not_served(tmp_path, teacher, digits, caplog):
    open_cache(tmp_path, teacher, digits).build()
    altered = load_dataset("digits")
    altered.pixels = 255 - altered.pixels  # same name, size and classes: only the pixels tell
    cache = open_cache(tmp_path, teacher, altered)
    batch = altered.batch(np.arange(100), teacher.preprocess)
    with caplog.at_level(logging.WARNING):
        got = cache.images(batch)
    assert cache.stats.stale_rows == 100 and cache.stats.images_computed == 100
    assert "100 rows were computed from other pixels than now: recomputing them" in caplog.text
    with torch.no_grad():
        assert np.allclose(got, teacher.encode_image(torch.from_numpy(batch.pixels)).numpy(), atol=1e-6)
    cache.flush()
    again = open_cache(tmp_path, teacher, altered)
    again.images(batch)
    assert (again.stats.image_hits, again.stats.images_computed) == (100, 0)  # written back


def test_truncated_or_corrupt_files_are_rebuilt(tmp_path, teacher, digits, caplog):
    first = open_cache(tmp_path, teacher, digits)
    first.build()
    reference = first.images(everything(digits, teacher.preprocess))
    folder = first.folder
    truncated = folder / "images-00000.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    corrupt = folder / "images-00003.safetensors"
    raw = bytearray(corrupt.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte in the embeddings
    corrupt.write_bytes(bytes(raw))
    (folder / "texts.safetensors").write_bytes(b"not a safetensors file")
    cache = open_cache(tmp_path, teacher, digits)
    with caplog.at_level(logging.WARNING):
        stats = cache.build()
    assert (stats.shards_rebuilt, stats.images_computed, stats.texts_computed) == (3, 2 * ROWS, 40)
    assert "images-00000.safetensors is unusable (truncated" in caplog.text
    assert "images-00003.safetensors is unusable (contents do not match their sha256)" in caplog.text
    assert "texts.safetensors is unusable (header of" in caplog.text
    assert np.allclose(cache.images(everything(digits, teacher.preprocess)), reference, atol=1e-6)
    healthy = open_cache(tmp_path, teacher, digits).build()
    assert (healthy.shards_rebuilt, healthy.images_computed, healthy.texts_computed) == (0, 0, 0)


def test_an_interrupted_build_leaves_no_half_shard(tmp_path, teacher, digits, monkeypatch):
    real_replace = cache_files.os.replace

    def interrupted(src, dst):
        if str(dst).endswith("images-00002.safetensors"):
            raise KeyboardInterrupt  # killed between writing the temporary file and renaming it
        real_replace(src, dst)

    monkeypatch.setattr(cache_files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_cache(tmp_path, teacher, digits).build()
    monkeypatch.undo()
    cache = open_cache(tmp_path, teacher, digits)
    assert not (cache.folder / "images-00002.safetensors").exists()
    stats = cache.build()  # the two finished shards are kept, the rest is computed, nothing is rebuilt
    assert (stats.shards_rebuilt, stats.images_computed) == (0, len(digits) - 2 * ROWS)


def test_compress_cli_shares_the_cache_between_stages_and_runs(tmp_path, capsys):
    from tiny_clip import make_tiny_clip_folder
    from vledge.cli import main

    teacher = make_tiny_clip_folder(tmp_path / "teacher")
    recipe = {
        "distill": {"epochs": 1, "batch_size": 64, "max_samples": 256, "patience": None},
        "recovery": {"epochs": 1, "batch_size": 64, "max_samples": 128, "patience": None},
        "quantize": {"calibration_samples": 32}, "eval_samples": 64, "tolerance": 0.99,
    }
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    summaries = []
    for run in ("first", "second"):
        code = main(["-q", "compress", "--teacher", str(teacher), "--target", "cpu", "--out", str(tmp_path / run),
                     "--data", "digits", "--config", str(tmp_path / "recipe.json"), "--prune", "0.25",
                     "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / f"{run}.json")])
        assert code == 0
        stages = json.loads((tmp_path / f"{run}.json").read_text())["stages"]
        summaries.append({s["name"]: s["summary"] for s in stages})
    # 256 training + 14 held-out images and the 40 prompts, computed once; recovery's 135 images are among them.
    assert "teacher cache: images 270 cached / 270 computed, texts 212 cached / 40 computed" in summaries[0]["distill"]
    assert "teacher cache: images 135 cached / 0 computed" in summaries[0]["prune"]
    assert "teacher cache: images 270 cached / 0 computed, texts 252 cached / 0 computed" in summaries[1]["distill"]
    assert len(list((tmp_path / "cache").iterdir())) == 1
