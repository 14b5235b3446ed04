"""Scores of a classifier on audio: per-window rows, per-file results and their summaries.

    logits [W, C] → scores (softmax or sigmoid) → timeline rows (start, end, scores)
        → mean or max over windows → scores [C] per file → top-k
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.inference.stream import FRAMES_PER_SECOND

AGGREGATES = ("mean", "max")


@dataclass
class ClipScores:
    """One scored file.

    scores: [C] aggregated over windows; window_scores: [W, C]; starts: first frame of each
    window; rows: the timeline (one `WindowRow` per window, times in seconds).
    """

    path: str
    duration_s: float
    scores: torch.Tensor
    window_scores: torch.Tensor
    starts: list[int]
    rows: list[WindowRow] = field(default_factory=list)

    @property
    def num_windows(self) -> int:
        return len(self.starts)


@dataclass
class WindowRow:
    """One scored window of a timeline: frames from `start`, seconds [start_s, end_s), scores [C].

    end_s is start_s plus the window's length, except for the clip's last window, which ends at
    the clip's end.
    """

    start: int
    start_s: float
    end_s: float
    scores: torch.Tensor


@dataclass
class ClipFailure:
    """A file that could not be scored, and why (one line, naming the file)."""

    path: str
    reason: str


@dataclass
class PredictionRun:
    """Everything `predict_files` produced: scores in input order, and the files that failed."""

    scored: list[ClipScores] = field(default_factory=list)
    failed: list[ClipFailure] = field(default_factory=list)


def score_kind(model: nn.Module) -> str:
    """`softmax` for a model trained with cross-entropy (meta "loss" == "ce"), else `sigmoid`."""
    meta = getattr(model, "meta", {}) or {}
    return "softmax" if str(meta.get("loss", "")).lower() == "ce" else "sigmoid"


def to_scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits [..., C] → scores [..., C]: softmax over classes or independent sigmoids."""
    if kind == "softmax":
        return logits.softmax(dim=-1)
    if kind == "sigmoid":
        return logits.sigmoid()
    raise ValueError(f"unknown score kind {kind!r}: use softmax or sigmoid")


def label_names(model: nn.Module, num_classes: int) -> list[str]:
    """The model's labels when it has one per class, else `class 0`, `class 1`, ..."""
    labels = list(getattr(model, "labels", []) or [])
    if len(labels) == num_classes:
        return [str(name) for name in labels]
    return [f"class {i}" for i in range(num_classes)]


def num_classes_of(model: nn.Module) -> int:
    """Classes the model predicts (its config's `num_classes`)."""
    return int(model.config.num_classes)


def aggregate(window_scores: torch.Tensor, how: str) -> torch.Tensor:
    """Per-window scores [W, C] → clip scores [C] by `mean` or `max` over windows."""
    if how == "mean":
        return window_scores.mean(dim=0)
    if how == "max":
        return window_scores.amax(dim=0)
    raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")


def timeline_rows(starts: Sequence[int], stops: Sequence[int], scores: torch.Tensor,
                  duration_s: float) -> list[WindowRow]:
    """Rows of windows at frames [start, stop) with scores [W, C]; the last ends at the clip's
    end."""
    rows = [WindowRow(start, start / FRAMES_PER_SECOND,
                      min(stop / FRAMES_PER_SECOND, duration_s), row_scores)
            for start, stop, row_scores in zip(starts, stops, scores, strict=True)]
    if rows:
        rows[-1].end_s = duration_s
    return rows


def top_k(scores: torch.Tensor, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The `k` best classes of scores [C]: `{"index", "label", "score"}`, best first."""
    values, indices = scores.topk(min(max(k, 1), scores.numel()))
    return [
        {"index": int(i), "label": labels[int(i)], "score": float(v)}
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]
