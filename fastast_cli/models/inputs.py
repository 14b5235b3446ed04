"""What input a model takes, asked of the model instead of checked from its class.

Every classifier answers `model.input_spec()` with an `InputSpec`: data loading, training,
evaluation, the sweep, predict and visualize read it to decide how long the fbank of a clip is,
how many mel bins it has, whether clips keep their own length, and which statistics normalize it.
`resolved_input` is the one place where missing statistics are filled in from a fallback (the
dataset's for evaluation, AudioSet's for predicting on loose files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from fastast_cli.data.features import FRAME_SHIFT_MS, LengthPolicy


@dataclass(frozen=True)
class InputSpec:
    """The fbank input of a model.

    target_length: frames of a fixed input (clips are padded or cut to it); for a native-length
        model, the longest clip it takes.
    num_mel_bins: mel bins per frame.
    native_length: True when the model takes a list of clips [T_i, F] of any length up to
        `target_length`, never padded (ElasticAST); False for a tensor [B, target_length, F].
    mean, std: normalization statistics stored with the model; None when it stores none.
    frame_shift_ms: time resolution, ms between frames (AST's 10 ms; ElasticAST also reads
        10 ms × q when asked for resolution q).
    stats_note: None when mean/std are the model's own (or it says nothing about them), else a
        sentence saying where they came from (for the CLI to print).
    waveform_rate: None for a model that reads fbanks; the sample rate of the waveforms
        [B, samples] a model with its own front end reads instead (a PaSST teacher on its
        32-kHz mels): `target_length` frames of `frame_shift_ms` each (`waveform_samples`).
    """

    target_length: int
    num_mel_bins: int
    native_length: bool = False
    mean: float | None = None
    std: float | None = None
    frame_shift_ms: float = FRAME_SHIFT_MS
    stats_note: str | None = None
    waveform_rate: int | None = None

    @property
    def stats(self) -> tuple[float, float]:
        """(mean, std); raises ValueError when the spec has none (see `resolved_input`)."""
        if self.mean is None or self.std is None:
            raise ValueError("this input spec has no normalization statistics")
        return self.mean, self.std

    def length_policy(self, whole_clip: bool = False) -> LengthPolicy:
        """How a clip's fbank is fitted for this model: padded/cut to `target_length` frames
        (fixed), or kept at its own length, one patch to `target_length` frames (native).

        whole_clip: a clip of any length, to be read in windows later (predict, visualize):
        never cut, padded to `target_length` frames (fixed) or to one patch (native).
        """
        if self.native_length:
            return LengthPolicy.native(None if whole_clip else self.target_length)
        if whole_clip:
            return LengthPolicy.at_least(self.target_length)
        return LengthPolicy.fixed(self.target_length)

    def waveform_samples(self) -> int:
        """Samples of the waveform a front-end model reads: `target_length` frames."""
        assert self.waveform_rate is not None, "this model reads fbanks"
        return round(self.target_length * self.frame_shift_ms * self.waveform_rate / 1000)

    def example(self, device: torch.device) -> torch.Tensor | list[torch.Tensor]:
        """One random input of this shape (a batch of one, drawn from its own generator):
        waveforms [1, samples] for a front-end model, a list of one clip [[T, F]] for a
        native-length one, else fbanks [1, T, F]."""
        generator = torch.Generator().manual_seed(0)
        if self.waveform_rate is not None:
            return torch.randn(1, self.waveform_samples(), generator=generator).to(device)
        clip = torch.randn(self.target_length, self.num_mel_bins, generator=generator)
        return [clip.to(device)] if self.native_length else clip[None].to(device)

    def teacher_frames(self) -> int | None:
        """How this model, as a distillation teacher, receives a student's clip: a fixed spec
        gets the clip's q = 1 view padded or cut to `target_length` frames; a native-length
        teacher (None) reads the student's own clip."""
        return None if self.native_length else self.target_length


def stored_stats(meta: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """Mean and std a checkpoint's meta records, (None, None) unless it records both."""
    meta = meta or {}
    if meta.get("mean") is None or meta.get("std") is None:
        return None, None
    return float(meta["mean"]), float(meta["std"])


Stats = tuple[float, float]


def resolved_input(model: nn.Module, fallback: Stats | Callable[[], Stats],
                   note: str | None = None) -> InputSpec:
    """`model.input_spec()` with mean and std always set: the model's own (with the note its
    checkpoint keeps about them, if any), else `fallback` (mean, std) with `note`. A callable
    fallback is only called when the model stores no statistics."""
    spec = model.input_spec()
    if spec.mean is not None and spec.std is not None:
        return replace(spec, stats_note=(getattr(model, "meta", None) or {}).get("stats_note"))
    mean, std = fallback() if callable(fallback) else fallback
    return replace(spec, mean=float(mean), std=float(std), stats_note=note)
