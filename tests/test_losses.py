"""Eq. 1 of the FastAST paper against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli.training.losses import distillation_loss, ground_truth_loss, teacher_targets


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_bce_distillation_by_hand():
    student, target, teacher = [0.0, 2.0], [1.0, 0.0], [1.0, -1.0]
    gt = -(math.log(sigmoid(0.0)) + math.log(1 - sigmoid(2.0))) / 2
    soft = [sigmoid(t) for t in teacher]
    kd = -sum(p * math.log(sigmoid(s)) + (1 - p) * math.log(1 - sigmoid(s))
              for p, s in zip(soft, student, strict=True)) / 2
    expected = 0.1 * gt + 0.9 * kd
    assert expected == pytest.approx(1.16799, abs=1e-5)  # worked out on paper
    taught = teacher_targets(torch.tensor([teacher]), "bce", temperature=1.0)
    loss = distillation_loss(torch.tensor([student]), torch.tensor([target]), taught, "bce",
                             kd_lambda=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ce_distillation_with_temperature_by_hand():
    student, teacher, tau, lam = [1.0, 2.0, 3.0], [3.0, 1.0, 0.0], 2.0, 0.3
    p_student = softmax(student)
    p_teacher = softmax([t / tau for t in teacher])  # τ on the teacher only
    gt = -math.log(p_student[2])
    pairs = zip(p_teacher, p_student, strict=True)
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in pairs)
    taught = teacher_targets(torch.tensor([teacher]), "ce", temperature=tau)
    loss = distillation_loss(torch.tensor([student]), torch.tensor([[0.0, 0.0, 1.0]]), taught,
                             "ce", kd_lambda=lam)
    assert loss.item() == pytest.approx(lam * gt + (1 - lam) * kl, rel=1e-6)


@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_lambda_one_and_no_teacher_are_the_plain_loss(kind):
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 6), teacher_targets(torch.randn(4, 6), kind, 1.0)
    targets = torch.eye(6)[torch.tensor([0, 3, 5, 1])]
    plain = ground_truth_loss(logits, targets, kind)
    assert torch.equal(distillation_loss(logits, targets, teacher, kind, kd_lambda=1.0), plain)
    assert torch.equal(distillation_loss(logits, targets, None, kind), plain)
    assert not torch.allclose(distillation_loss(logits, targets, teacher, kind, 0.1), plain)


def test_teacher_gets_no_gradient():
    logits = torch.randn(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    distillation_loss(logits, torch.eye(3)[:2], teacher_targets(teacher, "ce", 1.0),
                      "ce").backward()
    assert logits.grad is not None and teacher.grad is None


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        ground_truth_loss(torch.zeros(1, 2), torch.zeros(1, 2), "mse")


def test_cached_predictions_are_mixed_as_probabilities_by_hand():
    """Mixup of two clips with cached teacher logits: the target is the mix of the two
    predictions, as EfficientAT mixes (its loss is λ·L(ŷ, p_i) + (1-λ)·L(ŷ, p_j)), not the
    prediction of mixed logits."""
    from fastast_cli.training.batch import Mix

    mix = Mix(torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5], dtype=torch.float64))
    bce = mix.apply(teacher_targets(torch.tensor([[3.0], [-8.0]]), "bce", 1.0))
    # (σ(3) + σ(-8)) / 2 = (0.952574 + 0.000335) / 2; logit mixing gave σ(-2.5) = 0.0759
    assert bce.item() == pytest.approx(0.476455, abs=1e-6)
    cached = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ce = mix.apply(teacher_targets(cached, "ce", 1.0))
    # (softmax(4, 0, 0) + (1/3, 1/3, 1/3)) / 2, e⁴ = 54.59815; logit mixing: softmax(2, 0, 0)
    # = (0.78699, 0.10650, 0.10650)
    assert ce[0].tolist() == pytest.approx([0.648998, 0.175501, 0.175501], abs=1e-6)
    # EfficientAT's form: the λ-weighted losses of the two targets (BCE is linear in its target)
    student = torch.tensor([[0.7]])
    each = [distillation_loss(student, torch.zeros(1, 1), target, "bce", kd_lambda=0.0)
            for target in teacher_targets(torch.tensor([[3.0], [-8.0]]), "bce", 1.0)[:, None]]
    mixed = distillation_loss(student, torch.zeros(1, 1), bce.float(), "bce", kd_lambda=0.0)
    assert mixed.item() == pytest.approx(0.5 * each[0].item() + 0.5 * each[1].item(), rel=1e-6)
