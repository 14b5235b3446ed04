"""Clip lengths of a prepared dataset against its target length: what padding and cutting do.

A fixed-length AST pads every clip with zeros to `target_length` frames and cuts longer ones.
When most clips are much shorter than the target, most of each input is padding; when lengths
vary widely, ElasticAST (`--elastic`) trains on every clip at its own length instead. `prepare
folder` reports the distribution, how many clips the target cuts and how many it pads by more
than half, and suggests `--elastic` when lengths vary widely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from fastast_cli.data.features import FRAME_SHIFT_MS, SAMPLE_RATE, num_frames

SPREAD_FOR_ELASTIC = 4.0  # 95th / 5th percentile of the lengths at which --elastic is suggested
MOSTLY_PADDING = 0.25  # share of clips padded by more than half at which it is suggested too


def clip_seconds(path: object) -> float | None:
    """A file's duration from its header, None when soundfile cannot tell."""
    try:
        info = sf.info(os.fsencode(str(path)))  # bytes: names that are not UTF-8 open too
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class ClipLengths:
    """Durations (s) of a set of clips, and the model input they are fitted to."""

    seconds: tuple[float, ...]
    target_length: int  # frames of 10 ms

    @property
    def target_seconds(self) -> float:
        return self.target_length * FRAME_SHIFT_MS / 1000

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.seconds, q))

    @property
    def frames(self) -> list[int]:
        """Fbank frames of each clip at 16 kHz."""
        return [num_frames(round(s * SAMPLE_RATE)) for s in self.seconds]

    @property
    def cut(self) -> int:
        """Clips with more frames than the target: their end is dropped."""
        return sum(f > self.target_length for f in self.frames)

    @property
    def mostly_padding(self) -> int:
        """Clips of under half the target's frames: more than half of their input is zeros."""
        return sum(2 * f < self.target_length for f in self.frames)

    @property
    def spread(self) -> float:
        """95th over 5th percentile of the lengths (1: all alike)."""
        return self.percentile(95) / max(self.percentile(5), 1e-3)

    def distribution_line(self) -> str:
        """e.g. `clip lengths: 0.12 s min, 0.35 s median, 7.44 s 95th percentile, 9.80 s
        max; 36% under 0.40 s`."""
        short = sum(s < 0.4 for s in self.seconds) / len(self.seconds)
        return (f"clip lengths: {min(self.seconds):.2f} s min, {self.percentile(50):.2f} s "
                f"median, {self.percentile(95):.2f} s 95th percentile, {max(self.seconds):.2f} "
                f"s max; {short:.0%} under 0.40 s")

    def fitting_line(self) -> str:
        """What the target length does to the clips."""
        n = len(self.seconds)
        return (f"target length {self.target_length} frames ({self.target_seconds:.2f} s): "
                f"{self.cut} of {n} clips cut (their end dropped), {self.mostly_padding} "
                f"padded by more than half ({self.mostly_padding / n:.0%})")

    def suggestion(self) -> str | None:
        """The `--elastic` suggestion when lengths vary widely, else None."""
        padded = self.mostly_padding / len(self.seconds)
        if self.spread < SPREAD_FOR_ELASTIC and padded < MOSTLY_PADDING:
            return None
        return (f"clip lengths vary widely (95th / 5th percentile {self.spread:.1f}×, "
                f"{padded:.0%} of clips mostly padding): train with --elastic (ElasticAST "
                "reads every clip at its own length, no padding), or set --target-length")

    def lines(self) -> list[str]:
        """The report: distribution, fitting and, when it applies, the suggestion."""
        if not self.seconds:
            return []
        suggestion = self.suggestion()
        return [self.distribution_line(), self.fitting_line(),
                *([suggestion] if suggestion else [])]
