"""TensorBoard event files of a training run (`--tensorboard`), beside its CSV and JSON logs.

A `Reporter` that writes what it is told, then passes it on to another reporter:

    every optimizer step: train/loss, train/lr, train/samples_per_s   (step: global step)
    every epoch:          epoch/<each logged value> (train_loss, lr, accuracy, mAP, mAUC,
                          d_prime, samples_per_s, seconds)           (step: epoch number)

The files go to `<run>/tensorboard/` (`tensorboard --logdir runs/`). The optional `tensorboard`
package is imported only when asked for; without it the run stops before training, in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastast_cli.errors import FastASTError
from fastast_cli.training.reporting import Reporter

TENSORBOARD_EXTRA = "pip install 'fastast[tensorboard]'"
FOLDER = "tensorboard"


def summary_writer_class() -> Any:
    """torch's SummaryWriter (needs the tensorboard package), or a one-line FastASTError."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FastASTError(f"--tensorboard needs the optional package tensorboard: "
                           f"{TENSORBOARD_EXTRA}") from None
    return SummaryWriter


class TensorBoardReporter:
    """Scalars of every step and epoch into `folder` (opened at the first epoch, when the run
    folder exists), everything passed on to `inner`."""

    def __init__(self, inner: Reporter, folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise FastASTError(f"{folder} exists and is not a folder: --tensorboard writes its "
                               "event files there; move it or pick another --out")
        self.inner, self.folder = inner, folder
        self.writer_class = summary_writer_class()  # a missing package fails before training
        self.writer: Any = None
        self.step = 0

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.folder))
        self.step = epoch * batches  # global step of the epoch's first batch
        self.inner.epoch_started(epoch, epochs, batches)

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.step += 1
        for tag, value in (("train/loss", loss), ("train/lr", lr),
                           ("train/samples_per_s", samples_per_s)):
            self.writer.add_scalar(tag, value, self.step)
        self.inner.batch_done(loss, lr, samples_per_s)

    def epoch_done(self, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not math.isnan(value):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()  # an epoch's scalars survive an interruption
        self.inner.epoch_done(row)

    def note(self, message: str) -> None:
        self.inner.note(message)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
