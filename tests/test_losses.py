"""Eq. 1 of the FastAST paper against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli.training.losses import distillation_loss, ground_truth_loss


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
    loss = distillation_loss(torch.tensor([student]), torch.tensor([target]),
                             torch.tensor([teacher]), "bce", kd_lambda=0.1, temperature=1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ce_distillation_with_temperature_by_hand():
    student, teacher, tau, lam = [1.0, 2.0, 3.0], [3.0, 1.0, 0.0], 2.0, 0.3
    p_student = softmax(student)
    p_teacher = softmax([t / tau for t in teacher])  # τ on the teacher only
    gt = -math.log(p_student[2])
    pairs = zip(p_teacher, p_student, strict=True)
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in pairs)
    loss = distillation_loss(torch.tensor([student]), torch.tensor([[0.0, 0.0, 1.0]]),
                             torch.tensor([teacher]), "ce", kd_lambda=lam, temperature=tau)
    assert loss.item() == pytest.approx(lam * gt + (1 - lam) * kl, rel=1e-6)


@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_lambda_one_and_no_teacher_are_the_plain_loss(kind):
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 6), torch.randn(4, 6)
    targets = torch.eye(6)[torch.tensor([0, 3, 5, 1])]
    plain = ground_truth_loss(logits, targets, kind)
    assert torch.equal(distillation_loss(logits, targets, teacher, kind, kd_lambda=1.0), plain)
    assert torch.equal(distillation_loss(logits, targets, None, kind), plain)
    assert not torch.allclose(distillation_loss(logits, targets, teacher, kind, 0.1), plain)


def test_teacher_gets_no_gradient():
    logits = torch.randn(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    distillation_loss(logits, torch.eye(3)[:2], teacher, "ce").backward()
    assert logits.grad is not None and teacher.grad is None


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        ground_truth_loss(torch.zeros(1, 2), torch.zeros(1, 2), "mse")
