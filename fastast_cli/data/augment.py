"""Training-time augmentation, as in AST: SpecAugment masks, mixup, Speech Commands noise.

All randomness comes from torch's global generator (or an explicit `torch.Generator`), which
DataLoader seeds differently in each worker, so workers never repeat each other's draws.
"""

from __future__ import annotations

import torch

MIXUP_ALPHA = 10.0  # λ ~ Beta(10, 10), as in AST
NOISE_ROLL_FRAMES = 10  # time roll drawn from [-10, 10)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer uniform in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def _uniform(generator: torch.Generator | None) -> float:
    """A float uniform in [0, 1)."""
    return float(torch.rand((), generator=generator))


def mask_band(
    features: torch.Tensor, axis: int, max_width: int, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Zero one band of `features` `[T, F]` along `axis` (0 time, 1 frequency), in place.

    Width is uniform in [0, max_width] (capped at the axis size), start uniform over the
    positions where the band fits. Returns (start, width).
    """
    size = features.shape[axis]
    width = min(_randint(0, max_width + 1, generator), size) if max_width > 0 else 0
    start = _randint(0, size - width + 1, generator)
    if width:
        features.narrow(axis, start, width).zero_()
    return start, width


def spec_augment(
    features: torch.Tensor, freqm: int, timem: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One frequency mask (≤ freqm bins) and one time mask (≤ timem frames) on `[T, F]`.

    As in AST the masks are applied to the raw log-mel fbank (before normalization) and set
    it to 0. Returns a new tensor; the input is not modified.
    """
    out = features.clone()
    if freqm > 0:
        mask_band(out, 1, freqm, generator)
    if timem > 0:
        mask_band(out, 0, timem, generator)
    return out


def sample_mixup_lambda() -> float:
    """λ ~ Beta(10, 10), the mixing weight of the first clip (torch's global generator)."""
    return float(torch.distributions.Beta(MIXUP_ALPHA, MIXUP_ALPHA).sample())


def fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Cut `[samples]` to `length` samples, or zero-pad it at the end."""
    if wave.shape[0] >= length:
        return wave[:length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[0]))


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """`λ·first + (1-λ)·second`, the partner cut/padded to the first clip's length `[samples]`.

    Each waveform's mean is removed before mixing (and the fbank removes the mix's mean).
    """
    second = fit_length(second, first.shape[0])
    return lam * (first - first.mean()) + (1.0 - lam) * (second - second.mean())


def mix_targets(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """Mixed multi-hot targets `λ·y1 + (1-λ)·y2`, `[classes]`."""
    return lam * first + (1.0 - lam) * second


def noise_and_roll(
    features: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Speech Commands augmentation on a normalized `[T, F]` fbank (AST's `noise=True`).

    Adds `rand(T, F)·u/10` with u ~ U(0, 1), then rolls in time by an integer in [-10, 10).
    """
    scale = _uniform(generator) / 10.0
    noisy = features + torch.rand(features.shape, generator=generator) * scale
    shift = _randint(-NOISE_ROLL_FRAMES, NOISE_ROLL_FRAMES, generator)
    return torch.roll(noisy, shift, dims=0)
