"""Cross-validation results from the runs' per-epoch logs, in both ways they are reported.

A training run writes one row per epoch to `log.csv` in its `--out` folder (training.run_folder):
the epoch and its validation metrics, measured on the split `best.pt` is chosen on (for ESC-50's
folds: the fold's evaluation clips). From the logs of one run per fold:

- **AST's number** (`egs/esc50/get_esc_result.py` of the AST code): the metric of every epoch is
  averaged over the folds, and the epoch whose fold mean is highest is reported (the first such
  epoch on a tie). That epoch is chosen on the clips it is scored on: the 95.6 ± 0.4 of AST's
  paper is this number.
- **The last epoch**: the folds' final epoch, chosen by nothing (what `last.pt` scores).

Both are mean ± sample standard deviation over the folds, at epochs every fold logged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastast_cli.evaluation.evaluate import mean_and_std

LOG_NAME = "log.csv"  # a run's per-epoch log, in its --out folder
BEST_EPOCH = "best epoch of the fold mean (AST)"
LAST_EPOCH = "last epoch"


def read_epoch_log(path: Path, metric: str) -> dict[int, float]:
    """epoch → `metric` of one run's per-epoch log at `path` (a log.csv). Rows that cannot be
    read (no such column, not a number, not finite) are skipped; an epoch logged twice keeps
    its last row. Empty when the file is missing or unreadable."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, csv.Error):
        return {}
    curve: dict[int, float] = {}
    for row in rows:
        try:
            epoch, value = int(float(row["epoch"])), float(row[metric])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            curve[epoch] = value
    return curve


@dataclass(frozen=True)
class EpochResult:
    """One way of reporting the folds: the epoch it picks and the metric there over folds."""

    name: str  # BEST_EPOCH or LAST_EPOCH
    epoch: int
    mean: float
    std: float


def fold_epoch_results(curves: Sequence[Mapping[int, float]]) -> list[EpochResult]:
    """AST's best epoch of the fold-mean curve and the last epoch, over the epochs every curve
    (one run's epoch → metric per fold) holds. Empty when they share no epoch."""
    shared = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
    if not shared:
        return []
    fold_mean = {epoch: sum(curve[epoch] for curve in curves) / len(curves) for epoch in shared}
    best = max(shared, key=lambda epoch: (fold_mean[epoch], -epoch))  # first epoch on a tie
    return [EpochResult(name, epoch, *mean_and_std([curve[epoch] for curve in curves]))
            for name, epoch in ((BEST_EPOCH, best), (LAST_EPOCH, shared[-1]))]


def run_log(checkpoint: str | Path) -> Path:
    """The per-epoch log of the run a checkpoint belongs to: log.csv beside it."""
    return Path(checkpoint).parent / LOG_NAME
