"""Data-parallel training and distillation: two CPU processes on gloo, launched by torchrun, against one process.

The tolerance: with the same global batch, the two-process step computes the same losses over the same
items in the same order; what differs is float rounding (each rank convolves half the batch, DDP averages
two half-sums of the gradients). That is ~1e-7 per step, and a few Adam steps keep it near 1e-6 (measured
here: embeddings within 9e-7, losses within 4e-7), so the embeddings must agree to 1e-4 and the losses to 1e-5. Raw weights are not compared: the attention
key biases get a gradient that is exactly zero in theory (softmax ignores a constant shift) and rounding
noise in practice, which Adam scales up to steps of the learning rate; they do not change any output.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import TINY_TEXT, tiny_tokenizer
from vledge.train import distributed

TESTS = Path(__file__).parent
TRAIN = dict(
    data="digits", image_tower={"arch": "vit", "patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
    text_tower=dict(TINY_TEXT), embed_dim=16, image_size=8, batch_size=64, lr=3e-3, vocab_size=120, max_length=12,
    val_fraction=0.15, num_threads=1, epochs=1, max_samples=512,
)
DISTILL = dict(epochs=2, batch_size=96, lr=5e-3, patience=None, max_samples=600, num_threads=1)
STUDENT_IMAGE = {"arch": "vit", "patch_size": 7, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
EMBED_TOLERANCE, LOSS_TOLERANCE = 1e-4, 1e-5

WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
import test_distributed as t
from vledge.cli import main
code = main(["train", "--config", {config!r}, "--out", {out!r}, "--json"])
report, student, _ = t.distill_tiny({cache!r}, {teacher_tokenizer!r})
from vledge.train import distributed
if distributed.is_main():
    from safetensors.torch import save_file
    save_file(student.state_dict(), {out!r} + "/distilled.safetensors")
    with open({out!r} + "/distill_history.json", "w") as fh:
        json.dump(report.history, fh)
sys.exit(code)
"""


def tiny_teacher(tokenizer_path: str):
    """The tiny ViT teacher of tiny_models, on a tokenizer read from a file, so every process builds the same."""
    from tokenizers import Tokenizer

    from tiny_models import TINY_IMAGE, TINY_PREPROCESS
    from vledge.data.base import DEFAULT_TEMPLATES
    from vledge.data.fashion_mnist import CLASSES
    from vledge.models.factory import build_dual_encoder
    from vledge.text import TextTokenizer, TokenizerSpec

    backend = Tokenizer.from_file(tokenizer_path)
    tokenizer = TextTokenizer(backend, TokenizerSpec("wordpiece", 16, backend.token_to_id("[PAD]")))
    torch.manual_seed(0)
    return build_dual_encoder(TINY_IMAGE["vit"], TINY_TEXT, embed_dim=16, tokenizer=tokenizer, preprocess=TINY_PREPROCESS,
                              labels={"classes": list(CLASSES), "templates": list(DEFAULT_TEMPLATES)}).eval()


def distill_tiny(cache_dir: str, tokenizer_path: str):
    """A tiny ViT student distilled from a tiny ViT teacher (no BatchNorm) on digits, through a teacher cache."""
    from vledge.compress.distil import DistillConfig, TeacherCache, distill
    from vledge.compress.students import StudentSpec, build_student
    from vledge.data import load_dataset

    teacher = tiny_teacher(tokenizer_path)
    spec = StudentSpec("tiny-vit", "", STUDENT_IMAGE, {"shrink": {"depth": 1, "width": 0.5}})
    student = build_student(spec, teacher, seed=0)
    data = load_dataset("digits")
    cache = TeacherCache(cache_dir, teacher, data, shard_rows=256)
    cache.build()
    report = distill(student, teacher, data, DistillConfig(**DISTILL), teacher_forward=cache)
    cache.close()
    return report, student, cache.stats


def embeddings(model):
    from vledge.data import load_dataset

    test = load_dataset("digits", "test")
    with torch.no_grad():
        pixels = torch.from_numpy(test.batch(np.arange(len(test)), model.preprocess).pixels)
        prompts = [t.format(c) for c in test.classes for t in test.templates]
        return model.encode_image(pixels).numpy(), model.encode_text(*model.tokenize(prompts)).numpy()


def test_single_process_helpers_are_the_identity():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.shard([5, 1, 4]).tolist() == [5, 1, 4]
    assert distributed.broadcast_floats([1, 2.5]) == [1.0, 2.5] and distributed.broadcast_text("ü") == "ü"
    assert distributed.all_reduce_sum({"a": 2}) == {"a": 2}
    whole = distributed.GlobalBatch([7, 3, 9], np.array([7, 9]))
    rows = torch.arange(4.0).view(2, 2)
    assert whole.rows(rows) is rows and whole.indices.tolist() == [7, 9] and whole.usable()
    assert not distributed.GlobalBatch([7, 3], np.array([7])).usable()


def test_torchrun_environment_without_a_rendezvous_is_a_named_error(monkeypatch):
    from vledge.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT is not set: launch with torchrun"):
        distributed.init_from_env()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """`torchrun --nproc_per_node 2 -m vledge train` and a distillation, on gloo, in one launch."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "train.json").write_text(json.dumps(TRAIN))
    tiny_tokenizer().backend.save(str(root / "teacher_tok.json"))
    script = root / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), config=str(root / "train.json"),
                                    out=str(root / "two"), cache=str(root / "cache"),
                                    teacher_tokenizer=str(root / "teacher_tok.json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, run


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_two_processes_train_the_model_one_process_trains(two_processes, tmp_path):
    from vledge.models import load_teacher
    from vledge.train.config import TrainConfig
    from vledge.train import train

    root, run = two_processes
    one = train(TrainConfig(**TRAIN), tmp_path / "one", progress=False)
    two = json.loads(run.stdout[run.stdout.index("{"):])
    assert two["best_val"] == pytest.approx(one.best_val_top1, abs=1e-9)
    (image_1, text_1), (image_2, text_2) = embeddings(load_teacher(tmp_path / "one")), embeddings(load_teacher(root / "two"))
    assert np.abs(image_1 - image_2).max() < EMBED_TOLERANCE and np.abs(text_1 - text_2).max() < EMBED_TOLERANCE


def test_only_rank_0_writes_one_checkpoint_and_reports(two_processes):
    root, run = two_processes
    assert run.stdout.count('"best_epoch"') == 1  # one report, from rank 0
    written = sorted(p.name for p in (root / "two").iterdir())
    assert written == [".train_state", "config.json", "distill_history.json", "distilled.safetensors", "labels.json",
                       "model.safetensors", "preprocessor_config.json", "tokenizer.json"]
    assert "rank1" not in run.stderr  # no rank failed


def test_two_processes_distil_the_student_one_process_distils(two_processes):
    from safetensors.torch import load_file

    root, _ = two_processes
    report, student, stats = distill_tiny(str(root / "cache"), str(root / "teacher_tok.json"))
    shards = sorted(p.name for p in next((root / "cache").iterdir()).glob("images-*.safetensors"))
    assert shards == [f"images-{i:05d}.safetensors" for i in range(6)]  # 1438 images / 256 rows, half by each rank
    assert stats.images_computed == 0 and stats.texts_computed == 0  # the two ranks filled the whole cache
    history = json.loads((root / "two" / "distill_history.json").read_text())
    assert len(report.history) == len(history) == DISTILL["epochs"]
    for mine, theirs in zip(report.history, history):
        assert abs(mine["train_loss"] - theirs["train_loss"]) < LOSS_TOLERANCE
        assert abs(mine["val_loss"] - theirs["val_loss"]) < LOSS_TOLERANCE
    twin = copy.deepcopy(student)
    twin.load_state_dict(load_file(str(root / "two" / "distilled.safetensors")))
    (image_1, text_1), (image_2, text_2) = embeddings(student), embeddings(twin)
    assert np.abs(image_1 - image_2).max() < EMBED_TOLERANCE and np.abs(text_1 - text_2).max() < EMBED_TOLERANCE
