"""Score audio files of any length, rate and channel count with a trained classifier.

    file → mono 16 kHz → log-mel fbank [frames, F] → normalized → windows [W, T, F]
         → model → per-window scores [W, C] (softmax or sigmoid) → mean or max → scores [C]

A window is the model's input length T (`target_length` frames of 10 ms). A clip no longer than
one window is padded with zeros (or cut) to exactly one window, as AST's loader does. A longer
clip is read in windows starting every `hop` frames; when the last of them stops short of the
end, one more window ending exactly at the clip's end is added, so every frame is seen and no
window is padded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fastast_cli.data.audio import read_audio, resample, to_mono
from fastast_cli.data.elastic_features import fit_native_length
from fastast_cli.data.features import (
    AST_NORM_STATS,
    FRAME_SHIFT_MS,
    NUM_MEL_BINS,
    SAMPLE_RATE,
    as_channels_first,
    fbank,
    normalize,
    pad_or_cut,
)
from fastast_cli.errors import FastASTError
from fastast_cli.models.ast import AST
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.models.tome import RSchedule

PathLike = str | os.PathLike[str]
AGGREGATES = ("mean", "max")
DEFAULT_CNN_FRAMES = 1024
FRAMES_PER_SECOND = 1000.0 / FRAME_SHIFT_MS


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input: window length, mel bins, normalization and where it came from.

    stats_note: None when mean/std come from the checkpoint, else a sentence saying which
        fallback was used (for the CLI to print).
    native: clips shorter than a window keep their own length (ElasticAST) instead of being
        padded to `target_length`.
    """

    target_length: int
    num_mel_bins: int
    mean: float
    std: float
    stats_note: str | None = None
    native: bool = False


@dataclass
class ClipScores:
    """One scored file.

    scores: [C] aggregated over windows; window_scores: [W, C]; starts: first frame of each window.
    """

    path: str
    duration_s: float
    scores: torch.Tensor
    window_scores: torch.Tensor
    starts: list[int]

    @property
    def num_windows(self) -> int:
        return len(self.starts)


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


def input_spec(model: nn.Module) -> InputSpec:
    """Window length, mel bins and normalization for `model`.

    ASTs take their config's `target_length` × `num_mel_bins`; CNNs read `target_length` and
    `num_mel_bins` from their checkpoint's meta (default 1024 × 128). Mean/std come from the
    checkpoint's meta, else AST's AudioSet statistics (with a note saying so).
    """
    meta = getattr(model, "meta", {}) or {}
    native = isinstance(model, ElasticAST)
    if isinstance(model, AST | ElasticAST):
        length, bins = model.config.target_length, model.config.num_mel_bins
    else:
        length = int(meta.get("target_length") or DEFAULT_CNN_FRAMES)
        bins = int(meta.get("num_mel_bins") or NUM_MEL_BINS)
    if meta.get("mean") is not None and meta.get("std") is not None:
        return InputSpec(length, bins, float(meta["mean"]), float(meta["std"]), native=native)
    mean, std = AST_NORM_STATS["audioset"]
    note = (
        f"the checkpoint stores no input mean/std: using AST's AudioSet statistics "
        f"(mean {mean}, std {std})"
    )
    return InputSpec(length, bins, mean, std, note, native)


def hop_frames(hop_s: float | None, window: int) -> int:
    """Hop in fbank frames: `hop_s` seconds (10 ms frames, at least 1), or half a window."""
    if hop_s is None:
        return max(window // 2, 1)
    if not math.isfinite(hop_s) or hop_s <= 0:
        raise FastASTError(f"--hop must be a positive number of seconds, got {hop_s}")
    return max(round(hop_s * FRAMES_PER_SECOND), 1)


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """First frame of each window over a clip of `num_frames` frames.

    [0] for a clip no longer than one window; else 0, hop, 2·hop, ... as long as the window fits,
    plus a last window ending at the clip's end if the regular ones stop short of it.
    E.g. 3·window frames at hop window/2 → 5 windows.
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1 frame, got {window} and {hop}")
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def clip_features(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, spec: InputSpec
) -> torch.Tensor:
    """Normalized fbank of a whole clip `[max(frames, T), F]` (shorter clips padded to T, or
    for native-length models kept at their length, at least one patch).

    waveform: [samples], [channels, samples] or [samples, channels] at `sample_rate`; channels
    are averaged and the audio resampled to 16 kHz first.
    """
    mono = resample(to_mono(as_channels_first(waveform)), sample_rate, SAMPLE_RATE)
    features = fbank(mono, SAMPLE_RATE, spec.num_mel_bins)  # [frames, F]
    if features.shape[0] < spec.target_length:
        features = (fit_native_length(features) if spec.native
                    else pad_or_cut(features, spec.target_length))
    return normalize(features, spec.mean, spec.std)


def window_batches(
    features: torch.Tensor, starts: Sequence[int], window: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Windows of features [frames, F] at `starts`, `batch_size` at a time: [≤ batch, window, F]."""
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        yield torch.stack([features[start : start + window] for start in chunk])


def aggregate(window_scores: torch.Tensor, how: str) -> torch.Tensor:
    """Per-window scores [W, C] → clip scores [C] by `mean` or `max` over windows."""
    if how == "mean":
        return window_scores.mean(dim=0)
    if how == "max":
        return window_scores.amax(dim=0)
    raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")


@dataclass
class Predictor:
    """A loaded classifier and how to feed it: scores waveforms and files of any length.

    hop: frames between window starts; aggregate: `mean` or `max`; kind: `softmax`/`sigmoid`.
    """

    model: nn.Module
    spec: InputSpec
    hop: int
    aggregate: str = "mean"
    kind: str = "sigmoid"
    batch_size: int = 8
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # a backend's, else the model

    @property
    def labels(self) -> list[str]:
        return label_names(self.model, num_classes_of(self.model))

    def window_scores(self, features: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
        """Normalized features [frames, F] → scores [W, C] (float32, CPU) of the windows at
        `starts`, `batch_size` windows per forward pass."""
        outputs = []
        window = self.spec.target_length
        with torch.inference_mode():
            for batch in window_batches(features, starts, window, self.batch_size):
                logits = (self.forward or self.model)(batch.to(self.device)).float().cpu()
                outputs.append(to_scores(logits, self.kind))
        return torch.cat(outputs)

    def score_waveform(
        self, waveform: np.ndarray | torch.Tensor, sample_rate: int, path: str = "<waveform>"
    ) -> ClipScores:
        """Scores of one waveform `[samples]` or `[channels, samples]` at `sample_rate` Hz."""
        samples = torch.as_tensor(waveform).shape[-1]
        features = clip_features(waveform, sample_rate, self.spec)
        starts = window_starts(features.shape[0], self.spec.target_length, self.hop)
        per_window = self.window_scores(features, starts)
        return ClipScores(path, samples / sample_rate, aggregate(per_window, self.aggregate),
                          per_window, starts)

    def score_file(self, path: PathLike) -> ClipScores:
        """Scores of one audio file; raises AudioReadError when it cannot be decoded."""
        samples, rate = read_audio(path)
        return self.score_waveform(samples, rate, str(path))


def load_predictor(
    checkpoint: PathLike,
    r: RSchedule = 0,
    *,
    hop_s: float | None = None,
    how: str = "mean",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Predictor:
    """A Predictor for any checkpoint `load_classifier` reads (merging at `r` for ASTs).

    hop_s: seconds between window starts (default half a window); how: `mean` or `max`.
    """
    if how not in AGGREGATES:
        raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")
    if batch_size < 1:
        raise FastASTError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model = load_classifier(checkpoint, r, device=device)
    spec = input_spec(model)
    return Predictor(model, spec, hop_frames(hop_s, spec.target_length), how, score_kind(model),
                     batch_size, device)


def predict_files(
    predictor: Predictor,
    paths: Sequence[PathLike],
    on_file: Callable[[ClipScores | ClipFailure], None] | None = None,
) -> PredictionRun:
    """Score every file; one that cannot be read is recorded as a failure, the rest go on."""
    run = PredictionRun()
    for path in paths:
        outcome: ClipScores | ClipFailure
        try:
            outcome = predictor.score_file(path)
            run.scored.append(outcome)
        except FastASTError as error:
            outcome = ClipFailure(str(path), str(error))
            run.failed.append(outcome)
        if on_file is not None:
            on_file(outcome)
    return run


def top_k(scores: torch.Tensor, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The `k` best classes of scores [C]: `{"index", "label", "score"}`, best first."""
    values, indices = scores.topk(min(max(k, 1), scores.numel()))
    return [
        {"index": int(i), "label": labels[int(i)], "score": float(v)}
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def run_to_dict(run: PredictionRun, predictor: Predictor, k: int, **header: Any) -> dict[str, Any]:
    """A JSON-ready summary: `header` fields, the settings, top-k per scored file, and failures."""
    labels = predictor.labels
    window = predictor.spec.target_length
    return {
        **header,
        "scores": predictor.kind,
        "aggregate": predictor.aggregate,
        "window_s": window / FRAMES_PER_SECOND,
        "hop_s": predictor.hop / FRAMES_PER_SECOND,
        "results": [
            {
                "file": clip.path,
                "duration_s": round(clip.duration_s, 4),
                "windows": clip.num_windows,
                "top": top_k(clip.scores, labels, k),
            }
            for clip in run.scored
        ],
        "failures": [{"file": f.path, "error": f.reason} for f in run.failed],
    }
