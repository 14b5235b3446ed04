"""Sliding windows over audio that arrives in blocks, in constant memory.

    blocks [channels, n] at any rate → mono → 16 kHz (StreamResampler) → sample buffer
        → each window's own samples → fbank [frames, F] → padded (fixed) or native → normalized

A window of W frames starting at frame s reads samples [160·s, 160·s + 160·(W − 1) + 400): its
fbank is computed from those samples alone (mean removed over the window, as AST removes it
per clip), so a window's input does not depend on how the audio was cut into blocks. Only the
samples a later window may still need are kept: at most about one window plus one block.

Window placement (`WindowPlan`) is the same for a whole clip and for a stream: windows start
every `hop` frames while they fit; a clip no longer than one window is one window; when the
regular windows stop short of the end, a fixed-length model gets one more window ending at the
end, and a native-length model (ElasticAST) gets the next window on the hop grid, cut at the
end and scored at its own length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fastast_cli.data.features import (
    FRAME_SHIFT_MS,
    SAMPLE_RATE,
    frame_length_samples,
    waveform_fbank,
)
from fastast_cli.errors import FastASTError
from fastast_cli.models.inputs import InputSpec

FRAME_SHIFT = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160 samples between frames
FRAME_LENGTH = frame_length_samples()  # 400 samples per frame
FRAMES_PER_SECOND = 1000.0 / FRAME_SHIFT_MS


def frames_in(num_samples: int) -> int:
    """Complete fbank frames in `num_samples` 16-kHz samples (0 when fewer than one frame)."""
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def samples_for(frames: int) -> int:
    """16-kHz samples spanned by `frames` consecutive frames."""
    return (frames - 1) * FRAME_SHIFT + FRAME_LENGTH


@dataclass(frozen=True)
class Span:
    """One window: frames [start, stop) of the clip."""

    start: int
    stop: int


@dataclass(frozen=True)
class WindowPlan:
    """Where windows of `window` frames go, every `hop` frames; `native`: the last partial
    window keeps its own length instead of ending at the clip's end (unless the hop is longer
    than a window and the next start lies past the end: then it ends at the end, full)."""

    window: int
    hop: int
    native: bool = False

    def __post_init__(self) -> None:
        if self.window < 1 or self.hop < 1:
            raise ValueError(f"window and hop must be >= 1 frame, got {self.window}, {self.hop}")

    def regular(self, first: int, available: int) -> list[Span]:
        """Regular windows numbered from `first` that fit in `available` frames."""
        spans = []
        start = first * self.hop
        while start + self.window <= available:
            spans.append(Span(start, start + self.window))
            start += self.hop
        return spans

    def closing(self, regular_count: int, num_frames: int) -> list[Span]:
        """The window(s) after `regular_count` regular ones in a clip of `num_frames` frames."""
        if regular_count == 0:
            return [Span(0, num_frames)]  # a clip no longer than one window
        last_stop = (regular_count - 1) * self.hop + self.window
        if last_stop >= num_frames:
            return []
        start = regular_count * self.hop  # the next start on the hop grid
        if self.native and start < num_frames:
            return [Span(start, num_frames)]
        return [Span(num_frames - self.window, num_frames)]

    def count(self, num_frames: int) -> int:
        """How many windows `spans(num_frames)` holds, without listing them."""
        if num_frames <= self.window:
            return 1
        regular = (num_frames - self.window) // self.hop + 1
        return regular + len(self.closing(regular, num_frames))

    def spans(self, num_frames: int) -> list[Span]:
        """Every window of a clip of `num_frames` frames.

        E.g. window 64, hop 32: 192 frames → starts 0, 32, 64, 96, 128; 100 frames → 0, 32 and
        36 (fixed) or 64 cut at 100 (native); 40 frames → one window of 40 frames.
        """
        regular = self.regular(0, num_frames)
        return regular + self.closing(len(regular), num_frames)


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


def window_features(wave: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """A window's own 16-kHz samples (`samples_for(frames ≤ window ≤ target_length)`) → model
    input: its fbank [frames, F] fitted by `spec.length_policy()` (padded with zeros to the
    model's `target_length`, or kept at its own length, at least one patch), frames every
    `spec.frame_shift_ms`, normalized `(x - mean) / (2·std)` (spec.stats)."""
    return waveform_fbank(wave, SAMPLE_RATE, length=spec.length_policy(),
                          num_mel_bins=spec.num_mel_bins, frame_shift_ms=spec.frame_shift_ms,
                          stats=spec.stats)


@dataclass
class Window:
    """A window ready for the model: its span and its input [frames, F]."""

    span: Span
    features: torch.Tensor


class WindowCutter:
    """Turns 16-kHz mono samples pushed in blocks into the windows of a `WindowPlan`.

    `push(samples)` yields the regular windows the samples complete; `finish()` the closing
    window(s). Only the samples later windows may need are kept.
    """

    def __init__(self, plan: WindowPlan, spec: InputSpec) -> None:
        self.plan, self.spec = plan, spec
        self.buffer = torch.zeros(0)  # samples from `buffer_start` on
        self.buffer_start = 0
        self.total = 0  # samples pushed so far
        self.emitted = 0  # regular windows yielded so far

    def push(self, samples: torch.Tensor) -> Iterator[Window]:
        """Add samples `[n]` (16 kHz mono); yield the regular windows now complete."""
        self.buffer = torch.cat([self.buffer, samples])
        self.total += samples.shape[0]
        for span in self.plan.regular(self.emitted, frames_in(self.total)):
            self.emitted += 1
            yield self._window(span)
        self._trim()

    def finish(self) -> Iterator[Window]:
        """Yield the closing window(s) once the audio has ended (none when it had no samples)."""
        if self.total == 0:
            return
        for span in self.plan.closing(self.emitted, max(frames_in(self.total), 1)):
            yield self._window(span)

    def _window(self, span: Span) -> Window:
        first = span.start * FRAME_SHIFT - self.buffer_start
        wave = self.buffer[first : first + samples_for(span.stop - span.start)]
        return Window(span, window_features(wave, self.spec))

    def _trim(self) -> None:
        """Drop samples before both the next regular window and the last `window` frames."""
        next_start = self.emitted * self.plan.hop
        tail_start = max(frames_in(self.total) - self.plan.window, 0)
        keep = min(next_start, tail_start) * FRAME_SHIFT
        if keep > self.buffer_start:
            self.buffer = self.buffer[keep - self.buffer_start :]
            self.buffer_start = keep
