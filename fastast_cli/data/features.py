"""AST input features: Kaldi fbank, fitted to a length policy, normalization.

Exactly as the original AST loader: the waveform mean is removed, then
`torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type="hanning",
num_mel_bins=128, dither=0.0, frame_shift=10)` (25-ms frames); the result `[frames, bins]` is
zero-padded at the end or cut (keeping the start) to `target_length` frames and normalized as
`(x - mean) / (2·std)`.

`waveform_fbank` is the one waveform → fbank path: any rate and channel layout, a frame shift
(ElasticAST's 10 ms × q) and a `LengthPolicy` (AST's fixed length, ElasticAST's native length up
to a maximum, or a whole clip padded to at least one window) as parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from fastast_cli.data.audio import resample, to_mono

SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0
MIN_FRAMES = 16  # the fewest frames a native-length clip may have: one 16-frame patch
MAX_TARGET_LENGTH = 100_000  # frames (1000 s) a model input may be set to; AST uses 128–1024

# (mean, std) of the raw fbank that AST (Gong et al. 2021) normalizes each dataset with, the same
# for every fold: `dataset_mean`/`dataset_std` of its egs/audioset/run.sh, egs/esc50/run_esc.sh
# and egs/speechcommands/run_sc.sh. Recipes name them with `norm_stats: ast`; original AST
# checkpoints, which store none, are read with them.
AST_NORM_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}


def frame_length_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """Samples in one 25-ms analysis window (400 at 16 kHz)."""
    return int(sample_rate * FRAME_LENGTH_MS / 1000)


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE,
               frame_shift_ms: float = FRAME_SHIFT_MS) -> int:
    """Fbank frames of a waveform of `num_samples` with frames every `frame_shift_ms` (Kaldi
    snip-edges framing; at least 1)."""
    shift = int(sample_rate * frame_shift_ms * 0.001)  # as Kaldi rounds
    return 1 + max(num_samples - frame_length_samples(sample_rate), 0) // shift


def fbank(
    wave: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    num_mel_bins: int = NUM_MEL_BINS,
    frame_shift_ms: float = FRAME_SHIFT_MS,
) -> torch.Tensor:
    """Log-mel filterbank `[frames, num_mel_bins]` of a mono waveform `[samples]`, AST style.

    `frame_shift_ms` is AST's 10 ms unless a coarser time resolution is asked for (ElasticAST's
    10 ms × q). The waveform mean is subtracted first. A waveform shorter than one 25-ms window is
    zero-padded to one window (Kaldi cannot frame it otherwise), giving a single frame.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1)
    wave = wave - wave.mean()
    window = frame_length_samples(sample_rate)
    if wave.shape[1] < window:
        wave = torch.nn.functional.pad(wave, (0, window - wave.shape[1]))
    return kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=frame_shift_ms,
        frame_length=FRAME_LENGTH_MS,
    )


def pad_or_cut(features: torch.Tensor, target_length: int) -> torch.Tensor:
    """`[frames, bins]` → `[target_length, bins]`: zeros appended at the end, or the start kept."""
    frames = features.shape[0]
    if frames > target_length:
        return features[:target_length]
    if frames < target_length:
        return torch.nn.functional.pad(features, (0, 0, 0, target_length - frames))
    return features


def normalize(features: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """AST normalization `(x - mean) / (2·std)` (mean/std of the raw fbank of the training set)."""
    return (features - mean) / (2.0 * std)


def as_channels_first(waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor `[samples]` or `[channels, samples]`.

    2-D input is taken as `[channels, samples]`, except that `[samples, channels]` (soundfile's
    layout) is recognized when the second axis is short (≤ 16) and the first is longer.
    """
    wave = torch.as_tensor(np.asarray(waveform) if not torch.is_tensor(waveform) else waveform)
    wave = wave.to(torch.float32)
    if wave.ndim == 2 and wave.shape[1] <= 16 and wave.shape[0] > wave.shape[1]:
        wave = wave.T
    return wave


@dataclass(frozen=True)
class LengthPolicy:
    """How many frames an fbank keeps: zero-padded at the end up to `min_frames`, then cut
    (keeping the start) to `max_frames` (None: never cut).

    `fixed(T)`: exactly T frames (AST); `native(max)`: its own length, at least one patch, at
    most `max` (ElasticAST); `at_least(T)`: a whole clip, padded to T but never cut (windowing).
    """

    min_frames: int
    max_frames: int | None = None

    @classmethod
    def fixed(cls, frames: int) -> LengthPolicy:
        return cls(frames, frames)

    @classmethod
    def native(cls, max_frames: int | None = None, min_frames: int = MIN_FRAMES) -> LengthPolicy:
        return cls(min_frames, max_frames)

    @classmethod
    def at_least(cls, frames: int) -> LengthPolicy:
        return cls(frames, None)

    def fit(self, features: torch.Tensor) -> torch.Tensor:
        """`[frames, bins]` → `[frames', bins]` within [min_frames, max_frames]."""
        if features.shape[0] < self.min_frames:
            features = pad_or_cut(features, self.min_frames)
        if self.max_frames is not None and features.shape[0] > self.max_frames:
            features = pad_or_cut(features, self.max_frames)
        return features


def waveform_fbank(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    length: LengthPolicy,
    num_mel_bins: int = NUM_MEL_BINS,
    frame_shift_ms: float = FRAME_SHIFT_MS,
    stats: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Fbank `[frames, num_mel_bins]` (float32) of any waveform, fitted to `length`.

    waveform: `[samples]`, `[channels, samples]` or `[samples, channels]` at `sample_rate` Hz;
    channels are averaged and the audio resampled to 16 kHz first. Frames every
    `frame_shift_ms` (AST: 10 ms). stats: (mean, std) to normalize with, None for the raw fbank.
    """
    mono = resample(to_mono(as_channels_first(waveform)), sample_rate, SAMPLE_RATE)
    features = length.fit(fbank(mono, SAMPLE_RATE, num_mel_bins, frame_shift_ms))
    return features if stats is None else normalize(features, *stats)


def raw_features(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    target_length: int,
    num_mel_bins: int = NUM_MEL_BINS,
) -> torch.Tensor:
    """Un-normalized fbank `[target_length, num_mel_bins]` of any waveform (any rate, channels)."""
    return waveform_fbank(waveform, sample_rate, length=LengthPolicy.fixed(target_length),
                          num_mel_bins=num_mel_bins)


def waveform_to_fbank(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    target_length: int,
    mean: float,
    std: float,
    num_mel_bins: int = NUM_MEL_BINS,
) -> torch.Tensor:
    """Model input `[target_length, num_mel_bins]` (float32, normalized) from one waveform.

    `waveform` is `[samples]` or `[channels, samples]` at `sample_rate` Hz; this is what
    prediction uses on a single clip: add a batch axis with `.unsqueeze(0)` for the model.
    """
    return waveform_fbank(waveform, sample_rate, length=LengthPolicy.fixed(target_length),
                          num_mel_bins=num_mel_bins, stats=(mean, std))


@dataclass
class FbankSums:
    """Running sums of fbank values, to measure mean and std over a whole set of clips.

    Pooled over every value of every (padded/cut) clip, as the model sees them; AST's
    `get_norm_stats.py` averages per-batch means and stds instead, which differs by well under 1%.
    """

    total: float = 0.0
    total_sq: float = 0.0
    count: int = 0

    @classmethod
    def of(cls, features: torch.Tensor) -> FbankSums:
        """Sums of one feature matrix."""
        values = features.to(torch.float64)
        return cls(float(values.sum()), float((values * values).sum()), int(values.numel()))

    def __add__(self, other: FbankSums) -> FbankSums:
        return FbankSums(
            self.total + other.total, self.total_sq + other.total_sq, self.count + other.count
        )

    def mean_std(self) -> tuple[float, float]:
        """(mean, std) of all values seen; raises ValueError when nothing was added."""
        if self.count == 0:
            raise ValueError("no fbank values to measure mean and std on")
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        if not math.isfinite(mean) or not math.isfinite(var):
            raise ValueError("the fbank mean/std of the training clips are not finite")
        if var == 0.0:
            raise ValueError("every training clip gives the same fbank (silence?): its std is 0, "
                             "and features are divided by it")
        return mean, math.sqrt(var)
