import json

import pytest

from tiny_models import TINY_TEXT
from vledge.errors import CheckpointError, ConfigError
from vledge.train.config import TrainConfig
from vledge.train import train

TINY = dict(
    data="digits",
    image_tower={"arch": "vit", "patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
    text_tower=dict(TINY_TEXT),
    embed_dim=16,
    image_size=8,
    batch_size=64,
    lr=3e-3,
    vocab_size=120,
    max_length=12,
    val_fraction=0.15,
    num_threads=2,
)


def test_train_config_round_trips_and_validates(tmp_path):
    config = TrainConfig(**TINY, epochs=2)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(path) == config
    assert TrainConfig.from_dict(TrainConfig(**TINY).to_dict()).epochs is None  # the default: as min_steps needs
    with pytest.raises(ConfigError, match="min_steps must be non-negative"):
        TrainConfig(min_steps=-1)
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="TrainConfig: unknown key 'learning_rate'. Known: data, data_dir"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="TrainConfig version 2 is not supported"):
        TrainConfig.from_dict({**config.to_dict(), "version": 2})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ckpt"
    report = train(TrainConfig(**TINY, epochs=2), out, progress=False)
    return out, report


def test_training_on_real_digits_learns_and_keeps_the_best_epoch(trained):
    from vledge.data import load_dataset
    from vledge.evaluate import TorchEmbedder, evaluate
    from vledge.models import load_teacher

    out, report = trained
    assert report.epochs_run == 2 and len(report.history) == 2
    assert report.history[-1]["loss"]["ce"] < 2.0  # chance level is ln(10) = 2.30
    model = load_teacher(out)
    test = evaluate(TorchEmbedder(model), load_dataset("digits", "test"))
    assert test.top1 > 0.3  # ten classes: chance is 0.1
    assert report.best_val_top1 == max(h["val"]["top1"] for h in report.history)
    saved = json.loads((out / "config.json").read_text())
    assert saved["training"]["config"]["data"] == "digits"
    assert model.labels["classes"][0] == "zero"


def test_resume_continues_from_the_last_finished_epoch(trained, tmp_path):
    import shutil

    out, _ = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(out, copy)
    report = train(TrainConfig(**TINY, epochs=3), copy, resume=True, progress=False)
    assert report.epochs_run == 1
    assert [h["epoch"] for h in report.history] == [1, 2, 3]


def test_existing_output_is_refused_without_resume_or_overwrite(trained):
    out, _ = trained
    with pytest.raises(ConfigError, match="is not empty; pass --resume .* or --overwrite"):
        train(TrainConfig(**TINY, epochs=1), out, progress=False)


def test_resume_without_state_is_a_named_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume: .* holds no training state"):
        train(TrainConfig(**TINY, epochs=1), tmp_path / "fresh", resume=True, progress=False)


def test_epoch_plan_honours_explicit_epochs_and_scales_the_default():
    from vledge.train.schedule import epoch_plan

    assert epoch_plan(2, 5, default_epochs=3, min_steps=600) == (2, 1)
    assert epoch_plan(None, 222, default_epochs=3, min_steps=600) == (3, 1)  # Fashion-MNIST: one pass an epoch
    assert epoch_plan(None, 5, default_epochs=3, min_steps=600) == (3, 40)  # digits: 40 passes an epoch


def test_by_default_a_small_data_set_gets_min_steps_in_several_passes_an_epoch(tmp_path):
    from vledge.data import load_dataset
    from vledge.data.base import split

    steps_per_pass = len(split(load_dataset("digits", "train"), TINY["val_fraction"], 0)[0]) // TINY["batch_size"]
    report = train(TrainConfig(**TINY, min_steps=3 * steps_per_pass + 1), tmp_path / "run", progress=False)
    assert [h["steps"] for h in report.history] == [2 * steps_per_pass] * 3
