"""Training losses: the ground-truth loss and cross-model knowledge distillation (FastAST Eq. 1).

    loss = λ · Loss_g(ψ(Z_s), y) + (1 − λ) · Loss_d(ψ(Z_s), ψ(Z_t / τ))

`bce`: ψ = sigmoid, both terms binary cross-entropy (multi-label, and AST's Speech Commands).
`ce`:  ψ = softmax, ground truth by cross-entropy with (possibly soft) targets, distillation by
       KL(ψ(Z_t/τ) ‖ ψ(Z_s)) averaged over the batch.
τ divides the teacher's logits only, and there is no τ² factor (as in CMKD). The teacher's
logits are treated as constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce")


def ground_truth_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss of student logits [B, C] against label targets [B, C] (0/1 or mixup-soft)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    if kind == "ce":
        return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {', '.join(LOSSES)}")


def teacher_targets(teacher_logits: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """The teacher's softened predictions ψ(Z_t / τ) [B, C]: what the student is taught. Cached
    per-clip predictions are mixed as the batch was in this space (`Mix.apply`), as EfficientAT
    mixes its stored teacher predictions."""
    softened = teacher_logits.detach().float() / temperature
    if kind == "bce":
        return softened.sigmoid()
    if kind == "ce":
        return softened.softmax(dim=-1)
    raise ValueError(f"unknown loss {kind!r}: use one of {', '.join(LOSSES)}")


def teacher_loss(logits: torch.Tensor, taught: torch.Tensor, kind: str) -> torch.Tensor:
    """Distillation term: student logits [B, C] against the teacher's predictions `taught`
    [B, C] (`teacher_targets`: probabilities)."""
    taught = taught.detach()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, taught)
    if kind == "ce":
        return F.kl_div(logits.log_softmax(dim=-1), taught, reduction="batchmean")
    raise ValueError(f"unknown loss {kind!r}: use one of {', '.join(LOSSES)}")


def distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    taught: torch.Tensor | None,
    kind: str,
    kd_lambda: float = 0.1,
) -> torch.Tensor:
    """Eq. 1 with the teacher's predictions `taught` = ψ(Z_t / τ) (`teacher_targets`); without a
    teacher (or with λ = 1) it is the plain ground-truth loss."""
    plain = ground_truth_loss(logits, targets, kind)
    if taught is None or kd_lambda == 1.0:
        return plain
    return kd_lambda * plain + (1 - kd_lambda) * teacher_loss(logits, taught, kind)
