"""What the training loop tells the outside world: progress as it goes (a `Reporter`), and
what a run produced or where it was stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastast_cli.errors import Interrupted
from fastast_cli.evaluation.metrics import Metrics


class Reporter(Protocol):
    """What the loop tells the outside world (progress bars, logs). All calls on rank 0 only."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None: ...
    def epoch_done(self, row: dict[str, float]) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    """A reporter that tells nothing (tests, and every rank but the first)."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        pass

    def epoch_done(self, row: dict[str, float]) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training; `last.pt` holds the state reached."""


@dataclass
class RunResult:
    """What a finished run produced."""

    out: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]]
    averaged_metrics: Metrics | None = None
    split: str = "valid"  # the split the history's metrics (and best.pt) were measured on
