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


def teacher_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float
) -> torch.Tensor:
    """Distillation term: student logits [B, C] against the teacher's softened predictions."""
    teacher_logits = teacher_logits.detach() / temperature
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, teacher_logits.sigmoid())
    if kind == "ce":
        return F.kl_div(
            logits.log_softmax(dim=-1), teacher_logits.log_softmax(dim=-1),
            reduction="batchmean", log_target=True,
        )
    raise ValueError(f"unknown loss {kind!r}: use one of {', '.join(LOSSES)}")


def distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    kind: str,
    kd_lambda: float = 0.1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Eq. 1; without a teacher (or with λ = 1) it is the plain ground-truth loss."""
    plain = ground_truth_loss(logits, targets, kind)
    if teacher_logits is None or kd_lambda == 1.0:
        return plain
    return kd_lambda * plain + (1 - kd_lambda) * teacher_loss(
        logits, teacher_logits, kind, temperature
    )
