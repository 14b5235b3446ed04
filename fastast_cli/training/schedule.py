"""The learning-rate schedule of a run and the note a run from scratch starts with."""

from __future__ import annotations

from fastast_cli.training.config import TrainConfig


def learning_rate(config: TrainConfig, epoch: int, step: int, warmup_steps: int) -> float:
    """AST's schedule: linear warm-up over the first `warmup_steps` steps (the run's, from
    `warmup_steps_for`), then ×lr_decay at epochs lr_start, lr_start + lr_step, ... (0-based
    epochs: the decay applies from epoch lr_start)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    decays = 0 if epoch < config.lr_start else (epoch - config.lr_start) // config.lr_step + 1
    return config.lr * warm * config.lr_decay**decays


def from_scratch_note(model: str, warmup_steps: int) -> str:
    """The line a run from random weights starts with: it trains from scratch, and its warm-up
    (or that it has none, when --warmup-steps 0 switched it off)."""
    if not warmup_steps:
        return (f"training {model} from scratch (no --pretrained) without lr warm-up "
                "(--warmup-steps 0): a transformer from scratch may stay at chance")
    steps = "step" if warmup_steps == 1 else f"{warmup_steps} steps"
    return (f"training {model} from scratch (no --pretrained): lr warm-up over the first "
            f"{steps}")
