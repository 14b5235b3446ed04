"""Native-length, variable-resolution fbank for ElasticAST.

Resolution q scales the frame shift: frames every 10 ms × q, each still a 25-ms Hanning window
with AST's Kaldi parameters (see `fastast_cli.data.features`), so q = 1 is exactly AST's fbank and
q = 2 has half the frames (half the time patches, half the tokens) for the same audio. As in
ElasticAST, training draws q from a range (`draw_resolution`) and evaluation may use any q.

Clips keep their own length: nothing is padded except a clip shorter than one patch (16
frames), which is zero-padded in the raw fbank as AST pads; clips longer than the model's time
table are cut (keeping the start). `collate_native` batches such clips as a list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from fastast_cli.data.features import (
    FRAME_SHIFT_MS,
    NUM_MEL_BINS,
    SAMPLE_RATE,
    LengthPolicy,
    num_frames,
    waveform_fbank,
)

RESOLUTION_RANGE = (0.1, 16.0)  # q read or trained: frame shifts of 1 to 160 ms (paper: 1–4)


def shift_for_resolution(resolution: float) -> float:
    """Frame shift in milliseconds at resolution q: 10 ms × q."""
    if resolution <= 0:
        raise ValueError(f"resolution q must be > 0, got {resolution}")
    return FRAME_SHIFT_MS * resolution


def elastic_features(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    mean: float,
    std: float,
    resolution: float = 1.0,
    max_frames: int | None = None,
    num_mel_bins: int = NUM_MEL_BINS,
) -> torch.Tensor:
    """ElasticAST input `[frames, num_mel_bins]` (float32, normalized) of one waveform.

    Any rate and channel layout (averaged, resampled to 16 kHz); frames every 10 ms × q;
    native length (`LengthPolicy.native`); AST normalization `(x - mean) / (2·std)`.
    """
    return waveform_fbank(waveform, sample_rate, length=LengthPolicy.native(max_frames),
                          num_mel_bins=num_mel_bins,
                          frame_shift_ms=shift_for_resolution(resolution), stats=(mean, std))


def draw_resolution(
    low: float = 1.0,
    high: float = 4.0,
    generator: torch.Generator | None = None,
    *,
    discrete: bool = False,
) -> float:
    """A training resolution q: with `discrete`, one of low, low + 1, ... ≤ high, each equally
    likely (ElasticAST draws from {1, 2, 3, 4}); else uniform in [low, high]."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high for a resolution range, got [{low}, {high}]")
    if discrete:
        steps = math.floor(high - low + 1e-9) + 1
        return low + int(torch.randint(steps, (), generator=generator))
    return low + (high - low) * float(torch.rand((), generator=generator))


def frames_for_seconds(seconds: float, resolution: float = 1.0) -> int:
    """Fbank frames of a clip of `seconds` at resolution q (16-kHz framing)."""
    return num_frames(math.ceil(seconds * SAMPLE_RATE),
                      frame_shift_ms=shift_for_resolution(resolution))


def collate_native(batch: Sequence[tuple]) -> tuple:
    """DataLoader collate for native-length items `(fbank, target, ...)`: the fbanks as a list,
    every other field stacked as usual (targets [B, C], indices [B], ...)."""
    fbanks = [item[0] for item in batch]
    rest = default_collate([tuple(item[1:]) for item in batch])
    return (fbanks, *rest)

