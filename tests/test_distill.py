"""Distillation on a small real slice of Fashion-MNIST, from a tiny teacher trained for a few steps."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny_models import teacher_reference, tiny_dual_encoder
from vledge.compress.distil import DistillConfig, DistillReport, TeacherOutputs, distill
from vledge.compress.students import StudentSpec, build_student
from vledge.data.base import ImageTextDataset, Subset
from vledge.errors import ConfigError, DataError
from vledge.train.losses import class_ce_loss

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
STUDENT = StudentSpec(
    "test-student", "tiny narrow ResNet + half-width text tower",
    {"arch": "narrow_resnet", "widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1]},
    {"shrink": {"depth": 1, "width": 0.5}},
)
FAST = dict(batch_size=128, lr=5e-3, val_fraction=0.2, num_threads=1, max_samples=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fashion():
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    from vledge.data.fashion_mnist import FashionMNIST

    return FashionMNIST("test")


@pytest.fixture(scope="module")
def teacher(fashion):
    """The tiny ViT teacher after 30 steps of zero-shot training on images the distillation never sees."""
    model = tiny_dual_encoder("vit", seed=0)
    prompts = model.tokenize([t.format(c) for c in fashion.classes for t in fashion.templates])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(30):
        batch = fashion.batch(rng.choice(np.arange(5000, 10000), 128, replace=False), model.preprocess)
        image = model.encode_image(torch.from_numpy(batch.pixels))
        classes = F.normalize(model.encode_text(*prompts).view(10, -1, 16).mean(1), dim=-1)
        loss = class_ce_loss(image, classes, torch.from_numpy(batch.labels), model.logit_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def slice_2k(fashion):
    return Subset(fashion, range(2000))


def student_for(teacher):
    return build_student(STUDENT, teacher, seed=0)


# --- config


def test_config_round_trips_through_json():
    config = DistillConfig(epochs=3, patience=None, monitor="agreement", max_samples=500, num_threads=1)
    assert DistillConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict()["version"] == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1.0}, "invalid DistillConfig: lr must be a positive number, got -1.0"),
    ({"batch_size": 1}, "invalid DistillConfig: batch_size must be an integer >= 2"),
    ({"val_fraction": 1.0}, r"invalid DistillConfig: val_fraction must be in \(0, 1\), got 1.0"),
    ({"patience": -1}, "patience must be None or an integer >= 0, got -1"),
    ({"epochs": 0}, "epochs must be None or an integer >= 1, got 0"),
    ({"min_steps": -1}, "min_steps must be an integer >= 0, got -1"),
    ({"affinity_weight": 0.0, "mimic_weight": 0.0}, "mimic_weight or affinity_weight must be positive"),
    ({"monitor": "los"}, "monitor must be one of loss, agreement, got 'los'. Did you mean 'loss'\\?"),
])
def test_config_validation_says_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys_and_versions():
    with pytest.raises(ConfigError, match="unknown key 'epoch'. Did you mean 'epochs'\\?"):
        DistillConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="version 2 is not supported"):
        DistillConfig.from_dict({"version": 2})


# --- distillation


def test_distillation_lowers_held_out_loss_and_raises_agreement(teacher, slice_2k):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_for(teacher)
    report = distill(student, teacher, slice_2k, DistillConfig(epochs=3, patience=None, **FAST))
    assert isinstance(report, DistillReport) and report.epochs_run == 3 and not report.stopped_early
    assert (report.train_images, report.val_images) == (1600, 400)
    best = report.history[report.best_epoch - 1]
    assert report.best_epoch >= 1 and best["val_loss"] < 0.7 * report.initial["val_loss"]
    assert best["val_agreement"] > report.initial["val_agreement"] + 0.1
    assert report.best_metric == min(h["val_loss"] for h in report.history)
    assert {"train_loss", "train_affinity", "train_mimic", "images_per_second"} <= set(best)
    assert "train_contrastive" not in best  # class prompts are not real captions
    assert report.seconds < 60
    # The teacher is untouched and still in eval mode; the student ends in eval mode.
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not student.training


def test_distillation_is_seeded(teacher, fashion):
    data = Subset(fashion, range(400))
    config = DistillConfig(epochs=1, patience=None, **FAST)
    reports = [distill(student_for(teacher), teacher, data, config) for _ in range(2)]
    assert reports[0].history[0]["val_loss"] == reports[1].history[0]["val_loss"]


@pytest.mark.parametrize("patience", [0, 1])
def test_early_stopping_on_a_plateau_restores_the_best_weights(teacher, fashion, patience):
    # No epoch can improve the held-out loss by 100: a plateau from the start.
    student = student_for(teacher)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    config = DistillConfig(epochs=5, patience=patience, min_delta=100.0, **FAST)
    report = distill(student, teacher, Subset(fashion, range(300)), config)
    assert report.epochs_run == patience + 1 and report.stopped_early
    assert report.best_epoch == 0 and report.best_metric == report.initial["val_loss"]
    assert all(torch.equal(initial[k], v) for k, v in student.state_dict().items())


def test_monitoring_agreement_keeps_the_most_agreeing_epoch(teacher, fashion):
    config = DistillConfig(epochs=2, patience=None, monitor="agreement", **FAST)
    report = distill(student_for(teacher), teacher, Subset(fashion, range(600)), config)
    agreements = [report.initial["val_agreement"]] + [h["val_agreement"] for h in report.history]
    assert report.best_metric == max(agreements) and report.monitor == "agreement"


def test_by_default_a_small_data_set_gets_min_steps_in_several_passes_an_epoch(teacher, fashion):
    config = DistillConfig(patience=None, min_steps=17, **FAST)  # 240 training images: two steps a pass
    report = distill(student_for(teacher), teacher, Subset(fashion, range(300)), config)
    assert [h["steps"] for h in report.history] == [4] * 8  # the default 8 epochs, of two passes each


def test_max_samples_caps_training_images(teacher, fashion):
    config = DistillConfig(epochs=1, patience=None, **{**FAST, "max_samples": 256})
    report = distill(student_for(teacher), teacher, fashion, config)
    assert report.train_images == 256 and report.val_images == 64


def test_teacher_forward_can_be_replaced(teacher, fashion):
    calls, outputs = [], TeacherOutputs(teacher)

    def counting(batch, texts):
        calls.append(len(batch.indices))
        return outputs(batch, texts)

    data = Subset(fashion, range(500))
    distill(student_for(teacher), teacher, data, DistillConfig(epochs=2, patience=None, **FAST), teacher_forward=counting)
    # 100 held-out images once, then 400 training images per epoch in batches of 128 (the last of 16).
    assert calls == [100] + [128, 128, 128, 16] * 2


def test_without_a_cache_the_teacher_encodes_the_class_prompts_once(teacher, fashion, monkeypatch):
    encoded = []
    encode_text = teacher.encode_text
    monkeypatch.setattr(teacher, "encode_text", lambda ids, mask: encoded.append(len(ids)) or encode_text(ids, mask))
    images = []
    encode_image = teacher.encode_image
    monkeypatch.setattr(teacher, "encode_image", lambda pixels: images.append(len(pixels)) or encode_image(pixels))
    data = Subset(fashion, range(500))
    distill(student_for(teacher), teacher, data, DistillConfig(epochs=2, patience=None, **FAST))
    assert encoded == [len(fashion.classes) * len(fashion.templates)]  # the prompts, once: every caption here is one
    assert images == [100] + [128, 128, 128, 16] * 2  # the images of every batch, every epoch


def test_teacher_outputs_match_the_teacher_on_new_and_known_texts(teacher, fashion):
    batch = fashion.batch(range(4), teacher.preprocess)
    outputs = TeacherOutputs(teacher)
    outputs.encode_texts(["a photo of a bag.", "a photo of a coat."])
    texts = ["a photo of a coat.", "a red bag", "a photo of a bag.", "a red bag"]
    images, embeds = outputs(batch, texts)
    want_images, want_texts = teacher_reference(teacher, batch, texts)
    assert torch.allclose(images, want_images, atol=1e-6) and torch.allclose(embeds, want_texts, atol=1e-5)
    assert set(outputs.known) == {"a photo of a bag.", "a photo of a coat."}  # other texts are not kept


def test_a_cnn_student_trains_channels_last_and_is_given_back_contiguous(teacher, fashion):
    student = student_for(teacher)
    conv = next(m for m in student.image_tower.modules() if isinstance(m, torch.nn.Conv2d))
    layouts, outputs = [], TeacherOutputs(teacher)

    def watching(batch, texts):
        layouts.append(conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous())
        return outputs(batch, texts)

    distill(student, teacher, Subset(fashion, range(300)), DistillConfig(epochs=1, patience=None, **FAST),
            teacher_forward=watching)
    assert layouts[1:] == [True, True]  # the training steps (the first call: the held-out split, before them)
    assert all(p.is_contiguous() for p in student.parameters())  # safetensors refuses strided tensors


def test_the_same_prompts_are_tokenized_once_for_all_training_steps(teacher, fashion, monkeypatch):
    student, calls = student_for(teacher), []
    tokenize = student.tokenize
    monkeypatch.setattr(student, "tokenize", lambda texts: calls.append(len(texts)) or tokenize(texts))
    distill(student, teacher, Subset(fashion, range(500)), DistillConfig(epochs=2, patience=None, **FAST))
    # The 60 prompts (10 classes x 6 templates) once for the 8 training steps; the held-out scoring (before
    # training and after each epoch) tokenizes the prompts and its one batch's 50 captions each time.
    assert calls == [60, 50] + [60] + [60, 50] * 2


class Captioned(ImageTextDataset):
    """Fashion-MNIST images with free-text captions and no class names."""

    name = "captioned"
    has_captions = True
    classes = None

    def __init__(self, base, n):
        self.base, self.n = base, n

    def __len__(self):
        return self.n

    def image(self, i):
        return self.base.image(i)

    def caption(self, i, variant=0):
        return f"a {self.base.classes[self.base.label(i)]} seen from the {('left', 'right', 'top')[i % 3]}"


def test_real_captions_add_the_contrastive_term(teacher, fashion):
    report = distill(student_for(teacher), teacher, Captioned(fashion, 300), DistillConfig(epochs=1, patience=None, **FAST))
    assert report.history[0]["train_contrastive"] > 0
    assert 0 <= report.history[0]["val_agreement"] <= 1


def test_mismatched_inputs_are_refused(teacher, fashion):
    other = tiny_dual_encoder("vit", embed_dim=8)
    with pytest.raises(ConfigError, match="student embed_dim 8 differs from the teacher's 16"):
        distill(other, teacher, fashion, DistillConfig(**FAST))
    with pytest.raises(DataError, match="needs at least 4 images"):
        distill(student_for(teacher), teacher, Subset(fashion, range(3)), DistillConfig(**FAST))
