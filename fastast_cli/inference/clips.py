"""Score audio files of any length, rate and channel count with a trained classifier.

    file, read in blocks → mono 16 kHz → windows of W frames every `hop` frames
         → each window's log-mel fbank [W, F], normalized → model → scores [C] per window
         → timeline rows (start, end, scores) → mean or max over windows → scores [C]

A window is by default the model's input length T (`target_length` frames of 10 ms); a shorter
one (`--window`) is padded to T for fixed-length models. A clip no longer than one window is
one window, padded with zeros as AST's loader pads (ElasticAST: kept at its own length). Longer
clips are read in windows every `hop` frames; see `fastast_cli.inference.stream.WindowPlan` for
the last window. Files and streams are decoded block by block, so memory does not grow with
their length (beyond the per-window scores kept as output). The scores themselves (rows,
aggregates, top-k) are in `fastast_cli.inference.scores`.
"""

from __future__ import annotations

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
from fastast_cli.data.features import (
    AST_NORM_STATS,
    FRAME_SHIFT_MS,
    SAMPLE_RATE,
    as_channels_first,
    waveform_fbank,
)
from fastast_cli.devices import DTYPES, autocast
from fastast_cli.errors import FastASTError, NonFiniteScores
from fastast_cli.inference.scores import (
    AGGREGATES,
    ClipFailure,
    ClipScores,
    PredictionRun,
    WindowRow,
    aggregate,
    label_names,
    num_classes_of,
    score_kind,
    timeline_rows,
    to_scores,
    top_k,
)
from fastast_cli.inference.stream import (
    FRAME_SHIFT,
    FRAMES_PER_SECOND,
    Span,
    Window,
    WindowCutter,
    WindowPlan,
    frames_in,
    hop_frames,
    samples_for,
    window_features,
    window_frames,
    window_starts,
)
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.inputs import InputSpec, resolved_input
from fastast_cli.models.reduction.schedule import RSchedule
from fastast_cli.progress import track

PathLike = str | os.PathLike[str]

__all__ = [  # the predictor, and the scores and window sizes it works with (re-exported)
    "AGGREGATES", "FRAMES_PER_SECOND", "ClipFailure", "ClipScores", "InputSpec", "PredictionRun",
    "Predictor", "ScoreStream", "WindowRow", "aggregate", "clip_features", "features",
    "hop_frames",
    "input_spec", "label_names", "load_predictor", "num_classes_of", "predict_files",
    "run_to_dict", "score_kind", "timeline_rows", "to_scores", "top_k", "window_frames",
    "window_starts",
]


def input_spec(model: nn.Module) -> InputSpec:
    """What `model` takes (`model.input_spec()`), normalized with its checkpoint's statistics,
    else AST's AudioSet statistics (with a note saying so)."""
    mean, std = AST_NORM_STATS["audioset"]
    note = (f"the checkpoint stores no input mean/std: using AST's AudioSet statistics "
            f"(mean {mean}, std {std})")
    return resolved_input(model, (mean, std), note)


def clip_features(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, spec: InputSpec
) -> torch.Tensor:
    """Normalized fbank of a whole clip `[max(frames, T), F]` (shorter clips padded to T, or
    for native-length models kept at their length, at least one patch).

    waveform: [samples], [channels, samples] or [samples, channels] at `sample_rate`; channels
    are averaged and the audio resampled to 16 kHz first.
    """
    return waveform_fbank(waveform, sample_rate, length=spec.length_policy(whole_clip=True),
                          num_mel_bins=spec.num_mel_bins, frame_shift_ms=spec.frame_shift_ms,
                          stats=spec.stats)


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
    dtype: torch.dtype = torch.float32  # float16/bfloat16: run under autocast

    def __post_init__(self) -> None:
        self.window = self.window or self.spec.target_length
        if self.spec.frame_shift_ms != FRAME_SHIFT_MS:  # windows and hops are counted in them
            raise FastASTError(f"the model reads frames every {self.spec.frame_shift_ms:g} ms; "
                               f"predict places windows on a {FRAME_SHIFT_MS:g}-ms frame grid")

    @property
    def labels(self) -> list[str]:
        return label_names(self.model, num_classes_of(self.model))

    @property
    def plan(self) -> WindowPlan:
        """Where the windows go (native-length models score the last partial one as it is)."""
        return WindowPlan(self.window, self.hop, self.spec.native_length)

    def score_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Window inputs [T_i, F] → scores [B, C] (float32, CPU), `batch_size` per pass, through
        the backend's `forward` (else the model); native-length windows go to the model as a
        list, fixed ones as one tensor [B, T, F]; under autocast unless `dtype` is float32."""
        outputs = []
        with torch.inference_mode(), autocast(self.device, self.dtype):
            for first in range(0, len(inputs), self.batch_size):
                chunk = [x.to(self.device) for x in inputs[first : first + self.batch_size]]
                batch = chunk if self.spec.native_length else torch.stack(chunk)
                logits = (self.forward or self.model)(batch).float().cpu()
                if not bool(torch.isfinite(logits).all()):
                    raise NonFiniteScores(
                        "the model's scores are not finite (NaN or infinite): its weights or "
                        "input statistics are damaged, or the audio overflows them")
                outputs.append(to_scores(logits, self.kind))
        return torch.cat(outputs)

    def score_waveform(
        self, waveform: np.ndarray | torch.Tensor, sample_rate: int, path: str = "<waveform>"
    ) -> ClipScores:
        """Scores of one waveform `[samples]` or `[channels, samples]` at `sample_rate` Hz,
        decoded whole (the reference for `score_blocks`, which keeps memory constant)."""
        samples = torch.as_tensor(waveform).shape[-1]
        spans, inputs = self.window_inputs(waveform, sample_rate, path)
        scores = self.score_inputs(inputs)
        duration = samples / sample_rate
        rows = timeline_rows([span.start for span in spans], [span.stop for span in spans],
                             scores, duration)
        return self.clip_of(path, duration, rows)

    def window_inputs(
        self, waveform: np.ndarray | torch.Tensor, sample_rate: int, path: str = "<waveform>"
    ) -> tuple[list[Span], list[torch.Tensor]]:
        """The windows of one waveform and the model input of each [T, F] (fixed-length
        models: T = target_length; native-length ones: the window's own frames)."""
        if torch.as_tensor(waveform).shape[-1] == 0:
            raise AudioReadError(f"{path}: no audio samples")
        mono = resample(to_mono(as_channels_first(waveform)), sample_rate, SAMPLE_RATE)
        spans = self.plan.spans(max(frames_in(mono.shape[0]), 1))
        inputs = []
        for span in spans:
            wave = mono[span.start * FRAME_SHIFT :][: samples_for(span.stop - span.start)]
            inputs.append(window_features(wave, self.spec))
        return spans, inputs

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
        self.cutter = WindowCutter(predictor.plan, predictor.spec)

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


def features(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    model: nn.Module,
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """The input `model` takes for a waveform, exactly as `fastast predict` builds it.

    waveform: [samples], [channels, samples] or [samples, channels] at `sample_rate` Hz (any
    rate; channels averaged, resampled to 16 kHz). The clip is cut into predict's windows
    (one window for a clip up to the model's input length; `window_s`, `hop_s` as predict's
    --window and --hop), each a Kaldi fbank padded to the model's length and normalized with
    the checkpoint's mean and std (AudioSet's when it stores none). Returns [windows, T, F]
    for a fixed-length model (`model(features(...))` gives one row of logits per window;
    predict averages their scores), a list of [T_i, F] for a native-length one (ElasticAST).
    """
    spec = input_spec(model)
    window = window_frames(window_s, spec.target_length)
    predictor = Predictor(model, spec, hop_frames(hop_s, window), window=window)
    _, inputs = predictor.window_inputs(waveform, sample_rate)
    return inputs if spec.native_length else torch.stack(inputs)


def load_predictor(
    checkpoint: PathLike,
    r: RSchedule | None = None,
    *,
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    method: str | None = None,
    hop_s: float | None = None,
    window_s: float | None = None,
    how: str = "mean",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
) -> Predictor:
    """A Predictor for any checkpoint `load_classifier` reads (ASTs merge as their checkpoint
    records; `r`, `schedule`, `proportional_attention` and `method` override what they are
    given for).

    hop_s: seconds between window starts (default half a window); window_s: seconds per
    window (default the model's input length); how: `mean` or `max`; dtype: fp32 (the
    default), fp16 or bf16 (autocast).
    """
    if how not in AGGREGATES:
        raise FastASTError(f"unknown aggregate {how!r}: use {' or '.join(AGGREGATES)}")
    if batch_size < 1:
        raise FastASTError(f"batch size must be >= 1, got {batch_size}")
    if dtype not in DTYPES:
        raise FastASTError(f"unknown dtype {dtype!r}: choose {', '.join(DTYPES)}")
    device = torch.device(device)
    model = load_classifier(checkpoint, r, schedule=schedule,
                            proportional_attention=proportional_attention, method=method,
                            device=device)
    spec = input_spec(model)
    window = window_frames(window_s, spec.target_length)
    return Predictor(model, spec, hop_frames(hop_s, window), how, score_kind(model),
                     batch_size, device, window=window, dtype=DTYPES[dtype])


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
