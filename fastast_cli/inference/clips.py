"""Score audio files of any length, rate and channel count with a trained classifier.

    file, read in blocks → mono 16 kHz → windows of W frames every `hop` frames
         → each window's log-mel fbank [W, F], normalized → model → scores [C] per window
         → timeline rows (start, end, scores) → mean or max over windows → scores [C]

A window is by default the model's input length T (`target_length` frames of 10 ms); a shorter
one (`--window`) is padded to T for fixed-length models. A clip no longer than one window is
one window, padded with zeros as AST's loader pads (ElasticAST: kept at its own length). Longer
clips are read in windows every `hop` frames; see `fastast_cli.inference.stream.WindowPlan` for
the last window. Files and streams are decoded block by block, so memory does not grow with
their length (beyond the per-window scores kept as output).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fastast_cli.data.audio import (
    DEFAULT_BLOCK_SECONDS,
    AudioReadError,
    StreamResampler,
    open_audio,
    read_blocks,
    resample,
    to_mono,
)
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
from fastast_cli.inference.stream import (
    FRAME_SHIFT,
    Window,
    WindowCutter,
    WindowPlan,
    frames_in,
    samples_for,
    window_input,
)
from fastast_cli.models.ast import AST
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.models.reduction.schedule import RSchedule
from fastast_cli.progress import track

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


def input_spec(model: nn.Module) -> InputSpec:
    """Window length, mel bins and normalization for `model`.

    ASTs take their config's `target_length` × `num_mel_bins`; CNNs read `target_length` and
    `num_mel_bins` from their checkpoint's meta (default 1024 × 128). Mean/std come from the
    checkpoint's meta, else AST's AudioSet statistics (with a note saying so).
    """
    meta = getattr(model, "meta", {}) or {}
    native = model.input_spec().native_length  # ElasticAST: any clip length
    if isinstance(model, AST | ElasticAST):
        length, bins = model.config.target_length, model.config.num_mel_bins
    else:
        length = int(meta.get("target_length") or DEFAULT_CNN_FRAMES)
        bins = int(meta.get("num_mel_bins") or NUM_MEL_BINS)
    if meta.get("mean") is not None and meta.get("std") is not None:
        return InputSpec(length, bins, float(meta["mean"]), float(meta["std"]),
                         meta.get("stats_note"), native)
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


def window_frames(window_s: float | None, target_length: int) -> int:
    """Window in fbank frames: `window_s` seconds (at most the model's `target_length` frames,
    at least one 16-frame patch), or the model's whole input."""
    if window_s is None:
        return target_length
    frames = round(window_s * FRAMES_PER_SECOND) if math.isfinite(window_s) else -1
    if not 16 <= frames <= target_length:
        raise FastASTError(
            f"--window must lie between 0.16 s and the model's input, "
            f"{target_length / FRAMES_PER_SECOND:g} s; got {window_s}"
        )
    return frames


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """First frame of each window of a fixed-length model over a clip of `num_frames` frames.

    [0] for a clip no longer than one window; else 0, hop, 2·hop, ... as long as the window fits,
    plus a last window ending at the clip's end if the regular ones stop short of it.
    E.g. 3·window frames at hop window/2 → 5 windows.
    """
    return [span.start for span in WindowPlan(window, hop).spans(num_frames)]


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


def aggregate(window_scores: torch.Tensor, how: str) -> torch.Tensor:
    """Per-window scores [W, C] → clip scores [C] by `mean` or `max` over windows."""
    if how == "mean":
        return window_scores.mean(dim=0)
    if how == "max":
        return window_scores.amax(dim=0)
    raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")


@dataclass
class Predictor:
    """A loaded classifier and how to feed it: scores waveforms, files and streams of any length.

    hop: frames between window starts; aggregate: `mean` or `max`; kind: `softmax`/`sigmoid`;
    window: frames per window (0: the model's input length).
    """

    model: nn.Module
    spec: InputSpec
    hop: int
    aggregate: str = "mean"
    kind: str = "sigmoid"
    batch_size: int = 8
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # a backend's, else the model
    window: int = 0

    def __post_init__(self) -> None:
        self.window = self.window or self.spec.target_length

    @property
    def labels(self) -> list[str]:
        return label_names(self.model, num_classes_of(self.model))

    @property
    def plan(self) -> WindowPlan:
        """Where the windows go (native-length models score the last partial one as it is)."""
        return WindowPlan(self.window, self.hop, self.spec.native)

    def score_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Window inputs [T_i, F] → scores [B, C] (float32, CPU), `batch_size` per pass, through
        the backend's `forward` (else the model); native-length windows go to the model as a
        list, fixed ones as one tensor [B, T, F]."""
        outputs = []
        with torch.inference_mode():
            for first in range(0, len(inputs), self.batch_size):
                chunk = [x.to(self.device) for x in inputs[first : first + self.batch_size]]
                batch = chunk if self.spec.native else torch.stack(chunk)
                logits = (self.forward or self.model)(batch).float().cpu()
                outputs.append(to_scores(logits, self.kind))
        return torch.cat(outputs)

    def score_waveform(
        self, waveform: np.ndarray | torch.Tensor, sample_rate: int, path: str = "<waveform>"
    ) -> ClipScores:
        """Scores of one waveform `[samples]` or `[channels, samples]` at `sample_rate` Hz,
        decoded whole (the reference for `score_blocks`, which keeps memory constant)."""
        samples = torch.as_tensor(waveform).shape[-1]
        if samples == 0:
            raise AudioReadError(f"{path}: no audio samples")
        mono = resample(to_mono(as_channels_first(waveform)), sample_rate, SAMPLE_RATE)
        spans = self.plan.spans(max(frames_in(mono.shape[0]), 1))
        inputs = []
        for span in spans:
            wave = mono[span.start * FRAME_SHIFT :][: samples_for(span.stop - span.start)]
            raw = fbank(wave, SAMPLE_RATE, self.spec.num_mel_bins)[: span.stop - span.start]
            inputs.append(window_input(raw, self.window, self.spec.target_length,
                                       self.spec.native, self.spec.mean, self.spec.std))
        scores = self.score_inputs(inputs)
        duration = samples / sample_rate
        rows = timeline_rows([span.start for span in spans], [span.stop for span in spans],
                             scores, duration)
        return self.clip_of(path, duration, rows)

    def stream(self, blocks: Iterable[np.ndarray], sample_rate: int,
               eager: bool = False) -> ScoreStream:
        """Score audio arriving in blocks `[channels, n]`: iterate the result for timeline rows.

        eager: score the windows each block completes at once (live audio) instead of waiting
        for `batch_size` of them.
        """
        return ScoreStream(self, blocks, sample_rate, eager)

    def score_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int,
                     path: str = "<stream>") -> ClipScores:
        """Scores of audio arriving in blocks `[channels, n]`, in constant memory (plus rows)."""
        stream = self.stream(blocks, sample_rate)
        rows = list(stream)
        return self.clip_of(path, stream.duration_s, rows)

    def score_file(self, path: PathLike, block_s: float = DEFAULT_BLOCK_SECONDS) -> ClipScores:
        """Scores of one audio file read `block_s` seconds at a time; raises AudioReadError when
        it cannot be decoded."""
        with open_audio(path) as sound:
            block = max(int(block_s * sound.samplerate), 1)
            return self.score_blocks(read_blocks(sound, block, str(path)), sound.samplerate,
                                     str(path))

    def clip_of(self, path: str, duration_s: float, rows: list[WindowRow]) -> ClipScores:
        """A ClipScores from timeline rows: per-window scores and their aggregate."""
        if not rows:
            raise AudioReadError(f"{path}: no audio samples (empty file)")
        per_window = torch.stack([row.scores for row in rows])
        return ClipScores(path, duration_s, aggregate(per_window, self.aggregate), per_window,
                          [row.start for row in rows], rows)


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


class ScoreStream:
    """Timeline rows of audio arriving in blocks, yielded as windows are scored.

    Rows come one window behind the scoring (the last row's end is the clip's end, known only
    when the audio ends). After iterating, `samples` and `duration_s` say how much audio came in.
    """

    def __init__(self, predictor: Predictor, blocks: Iterable[np.ndarray], sample_rate: int,
                 eager: bool = False) -> None:
        self.predictor, self.blocks, self.sample_rate, self.eager = (
            predictor, blocks, sample_rate, eager)
        self.samples = 0
        spec = predictor.spec
        self.cutter = WindowCutter(predictor.plan, spec.num_mel_bins, spec.target_length,
                                   spec.mean, spec.std)

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate

    def __iter__(self) -> Iterator[WindowRow]:
        held: WindowRow | None = None  # the latest row, yielded once the next one exists
        for row in self._rows():
            if held is not None:
                yield held
            held = row
        if held is not None:
            held.end_s = self.duration_s
            yield held

    def _windows(self) -> Iterator[Window | None]:
        """The windows in time order, with None after each block's."""
        resampler = StreamResampler(self.sample_rate, SAMPLE_RATE)
        for block in self.blocks:
            self.samples += block.shape[-1]
            yield from self.cutter.push(resampler.push(to_mono(block)))
            yield None
        yield from self.cutter.push(resampler.finish())
        yield from self.cutter.finish()

    def _rows(self) -> Iterator[WindowRow]:
        """Rows as windows are scored, `batch_size` at a time (eager: also at each block's end),
        so at most one batch of window inputs is held."""
        pending: list[Window] = []
        for window in self._windows():
            if window is not None:
                pending.append(window)
            if len(pending) == self.predictor.batch_size or (
                    window is None and self.eager and pending):
                yield from self._score(pending)
                pending = []
        if pending:
            yield from self._score(pending)

    def _score(self, windows: list[Window]) -> list[WindowRow]:
        scores = self.predictor.score_inputs([window.features for window in windows])
        return [WindowRow(w.span.start, w.span.start / FRAMES_PER_SECOND,
                          w.span.stop / FRAMES_PER_SECOND, row)
                for w, row in zip(windows, scores, strict=True)]


def load_predictor(
    checkpoint: PathLike,
    r: RSchedule | None = None,
    *,
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    hop_s: float | None = None,
    window_s: float | None = None,
    how: str = "mean",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Predictor:
    """A Predictor for any checkpoint `load_classifier` reads (ASTs merge as their checkpoint
    records; `r`, `schedule` and `proportional_attention` override what they are given for).

    hop_s: seconds between window starts (default half a window); window_s: seconds per
    window (default the model's input length); how: `mean` or `max`.
    """
    if how not in AGGREGATES:
        raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")
    if batch_size < 1:
        raise FastASTError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model = load_classifier(checkpoint, r, schedule=schedule,
                            proportional_attention=proportional_attention, device=device)
    spec = input_spec(model)
    window = window_frames(window_s, spec.target_length)
    return Predictor(model, spec, hop_frames(hop_s, window), how, score_kind(model),
                     batch_size, device, window=window)


def predict_files(
    predictor: Predictor,
    paths: Sequence[PathLike],
    on_file: Callable[[ClipScores | ClipFailure], None] | None = None,
) -> PredictionRun:
    """Score every file; one that cannot be read is recorded as a failure, the rest go on."""
    run = PredictionRun()
    for path in track(paths, "predict", total=len(paths)) if len(paths) > 1 else paths:
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
    window = predictor.window
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
