"""Timelines and events of long recordings: per-window rows written as they come, and per-class
segments where the score stays above a threshold.

An event of class c is a maximal run of windows scoring ≥ its threshold whose time spans
overlap or touch: with overlapping windows one sound is seen by several windows, and it is
reported once, from the first window's start (onset) to the last one's end (offset), with the
highest score (peak) and the middle of the window that scored it. Times are as precise as the
windows: a window says *that* a sound is inside it, not where.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from fastast_cli.errors import FastASTError
from fastast_cli.inference.scores import WindowRow, top_k
from fastast_cli.values import load_json

TIMELINE_CLASSES = ("all", "top")


@dataclass
class Event:
    """One detected sound: its class, onset and offset (s), peak score and when it peaked (s)."""

    index: int
    label: str
    onset_s: float
    offset_s: float
    peak: float
    peak_s: float
    windows: int

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("onset_s", "offset_s", "peak_s"):
            record[key] = round(record[key], 3)
        record["peak"] = round(record["peak"], 6)
        return record


@dataclass
class Nearest:
    """The score that came nearest its class's threshold: what a user who found no event needs
    to pick a threshold that would find one."""

    label: str
    score: float
    threshold: float
    at_s: float  # middle of the window that scored it

    @property
    def gap(self) -> float:
        return self.score - self.threshold

    def suggested_threshold(self) -> float:
        """The largest two-decimal threshold this score still reaches."""
        return math.floor(self.score * 100) / 100

    def hint(self) -> str:
        """One line for a search that found no event."""
        return (f"no window reached its threshold: the top score was {self.score:.4f} "
                f"({self.label} at {self.at_s:.2f} s, threshold {self.threshold:g}); "
                f"--threshold {self.suggested_threshold():.2f} would find it")


class EventTracker:
    """Merges, per class, windows scoring ≥ the class's threshold into events (see module).

    thresholds: [C]; rows must come in time order (as `Predictor.stream` yields them).
    """

    def __init__(self, thresholds: torch.Tensor, labels: Sequence[str]) -> None:
        self.thresholds, self.labels = thresholds, list(labels)
        self.open: dict[int, Event] = {}
        self.closed: list[Event] = []
        self.closest: Nearest | None = None  # the window and class nearest its threshold

    def add(self, row: WindowRow) -> None:
        """Take one window's scores [C] into the open events."""
        middle = (row.start_s + row.end_s) / 2
        gaps = row.scores - self.thresholds  # [C]: ≥ 0 where a class passes
        best = int(gaps.argmax())
        if self.closest is None or float(gaps[best]) > self.closest.gap:
            self.closest = Nearest(self.labels[best], float(row.scores[best]),
                                   float(self.thresholds[best]), middle)
        for index in torch.nonzero(row.scores >= self.thresholds).flatten().tolist():
            score = float(row.scores[index])
            event = self.open.get(index)
            if event is not None and row.start_s <= event.offset_s:
                event.offset_s = max(event.offset_s, row.end_s)
                event.windows += 1
                if score > event.peak:
                    event.peak, event.peak_s = score, middle
                continue
            if event is not None:
                self.closed.append(event)
            self.open[index] = Event(index, self.labels[index], row.start_s, row.end_s, score,
                                     middle, 1)

    def events(self) -> list[Event]:
        """Every event so far, open ones included, by onset then class."""
        return sorted([*self.closed, *self.open.values()], key=lambda e: (e.onset_s, e.index))


def find_events(rows: Iterable[WindowRow], thresholds: torch.Tensor,
                labels: Sequence[str]) -> list[Event]:
    """The events of timeline rows in time order (see `EventTracker`)."""
    tracker = EventTracker(thresholds, labels)
    for row in rows:
        tracker.add(row)
    return tracker.events()


def check_threshold(value: float, what: str = "--threshold") -> float:
    """`value` when it is a number in [0, 1], else FastASTError."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise FastASTError(f"{what} must lie in [0, 1] (scores are probabilities), got {value}")
    return float(value)


def load_thresholds(path: str | os.PathLike[str] | None, default: float,
                    labels: Sequence[str]) -> torch.Tensor:
    """Per-class thresholds [C]: `default`, overridden per label by `path`.

    path: a JSON object `{"label": threshold}` (.json), or a CSV with columns `label` and
    `threshold`. Unknown labels and values outside [0, 1] are refused.
    """
    thresholds = torch.full((len(labels),), check_threshold(default))
    if path is None:
        return thresholds
    for label, value in _read_threshold_file(Path(path)).items():
        if label not in labels:
            raise FastASTError(f"{path}: no class {label!r} in this model (labels: "
                               f"{', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FastASTError(
                f"{path}: threshold of {label!r} is not a number: {value!r}") from None
        thresholds[labels.index(label)] = check_threshold(number, f"{path}: threshold of {label!r}")
    return thresholds


def _read_threshold_file(path: Path) -> dict[str, Any]:
    """label → threshold from a JSON object or a label,threshold CSV."""
    if not path.is_file():
        raise FastASTError(f"{path}: thresholds file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FastASTError(f"{path}: cannot read thresholds ({error})") from None
    if path.suffix.lower() == ".json":
        mapping = load_json(text, str(path))
        if not isinstance(mapping, dict):
            raise FastASTError(f'{path}: expected a JSON object {{"label": threshold, ...}}')
        return mapping
    reader = csv.DictReader(text.splitlines())
    if not {"label", "threshold"} <= set(reader.fieldnames or []):
        raise FastASTError(f"{path}: expected a CSV with columns label and threshold")
    mapping: dict[str, Any] = {}
    for row in reader:
        if row["label"] in mapping:
            raise FastASTError(f"{path}: label {row['label']!r} is given twice")
        mapping[row["label"]] = row["threshold"]
    return mapping


def row_record(row: WindowRow, labels: Sequence[str], k: int | None) -> dict[str, Any]:
    """A JSON-ready timeline row: times, and every class's score (k None) or the top k."""
    record: dict[str, Any] = {"start_s": round(row.start_s, 3), "end_s": round(row.end_s, 3)}
    if k is None:
        record["scores"] = dict(zip(labels, (round(v, 6) for v in row.scores.tolist()),
                                    strict=True))
    else:
        record["top"] = [{"label": t["label"], "score": round(t["score"], 6)}
                         for t in top_k(row.scores, labels, k)]
    return record


class TimelineCSV:
    """Writes timeline rows to an open text file as they come: `start_s, end_s`, then one column
    per class (k None) or `label_1, score_1, ..., label_k, score_k`."""

    def __init__(self, handle: TextIO, labels: Sequence[str], k: int | None) -> None:
        self.handle, self.labels, self.k = handle, list(labels), k
        self.writer = csv.writer(handle)
        if k is None:
            header = self.labels
        else:
            header = [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "score")]
        self.writer.writerow(["start_s", "end_s", *header])

    def write(self, row: WindowRow) -> None:
        """One row, flushed."""
        if self.k is None:
            cells = [f"{v:.6f}" for v in row.scores.tolist()]
        else:
            cells = [c for t in top_k(row.scores, self.labels, self.k)
                     for c in (t["label"], f"{t['score']:.6f}")]
        self.writer.writerow([f"{row.start_s:.3f}", f"{row.end_s:.3f}", *cells])
        self.handle.flush()


def top_classes(rows: Sequence[WindowRow], k: int) -> list[int]:
    """Indices of the `k` classes with the highest score in any window, best first."""
    peaks = torch.stack([row.scores for row in rows]).amax(dim=0)  # [C]
    return peaks.topk(min(k, peaks.numel())).indices.tolist()
