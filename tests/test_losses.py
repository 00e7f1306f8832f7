import math

import pytest
import torch
import torch.nn.functional as F

from vledge.compress.distil.losses import affinity_distillation_loss, embedding_mimic_loss
from vledge.train.losses import class_ce_loss, contrastive_loss, joint_loss


def test_contrastive_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # rows: -log softmax of the diagonal; columns likewise on the transpose
    i2t = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    t2i = -(math.log(math.exp(2) / (math.exp(2) + math.exp(1))) + math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert contrastive_loss(logits).item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_class_ce_loss_is_cross_entropy_of_scaled_cosines():
    image = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    classes = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 1])
    scale = torch.tensor(10.0)
    logits = 10.0 * torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    expected = F.cross_entropy(logits, labels)
    assert class_ce_loss(image, classes, labels, scale).item() == pytest.approx(expected.item(), rel=1e-6)


def test_joint_loss_adds_ce_over_labelled_items_only():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(4, 8), dim=-1)
    text = F.normalize(torch.randn(4, 8), dim=-1)
    classes = F.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([0, -1, 2, -1])
    scale = torch.tensor(5.0)
    loss, parts = joint_loss(image, text, scale, class_embeds=classes, labels=labels, contrastive_weight=0.5)
    ce = class_ce_loss(image[[0, 2]], classes, labels[[0, 2]], scale)
    con = contrastive_loss(scale * image @ text.t())
    assert loss.item() == pytest.approx((ce + 0.5 * con).item(), rel=1e-6)
    assert set(parts) == {"ce", "contrastive"}
    unlabelled, parts = joint_loss(image, text, scale, class_embeds=classes, labels=torch.full((4,), -1))
    assert "ce" not in parts and unlabelled.item() == pytest.approx(con.item(), rel=1e-6)


def test_affinity_distillation_is_zero_for_identical_models_and_positive_otherwise():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    assert affinity_distillation_loss(image, text, image, text).item() == pytest.approx(0.0, abs=1e-6)
    other = F.normalize(torch.randn(6, 8), dim=-1)
    assert affinity_distillation_loss(other, text, image, text).item() > 0.1


def test_embedding_mimic_loss_is_one_minus_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert embedding_mimic_loss(a, b).item() == pytest.approx(0.5)
