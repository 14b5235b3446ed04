"""AST features: fbank parity with transformers, pad/cut lengths, normalization, any input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from data_fixtures import no_progress, tone  # noqa: F401

from fastast_cli.data.features import (
    AST_NORM_STATS,
    FbankSums,
    fbank,
    normalize,
    num_frames,
    pad_or_cut,
    raw_features,
    waveform_to_fbank,
)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A waveform with a DC offset, harmonics and noise, float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 660, 1500, 3100), 1))
    return (0.2 * wave + 0.05 * rng.standard_normal(t.shape) + 0.03).astype(np.float32)


@pytest.mark.parametrize("target_length", [1024, 128])
def test_fbank_matches_transformers_ast_feature_extractor(target_length: int) -> None:
    from transformers import ASTFeatureExtractor

    wave = _speechlike(3.0)
    mean, std = AST_NORM_STATS["audioset"]
    ours = waveform_to_fbank(wave, 16000, target_length=target_length, mean=mean, std=std)
    extractor = ASTFeatureExtractor(max_length=target_length)  # AudioSet mean/std by default
    # transformers does not remove the waveform mean; AST (and we) do: remove it for the comparison.
    theirs = extractor(wave - wave.mean(), sampling_rate=16000, return_tensors="np")[
        "input_values"
    ][0]
    assert ours.shape == theirs.shape == (target_length, 128)
    assert ours.dtype == torch.float32
    assert np.abs(ours.numpy() - theirs).max() < 1e-3


def test_frame_count_follows_kaldi_framing() -> None:
    assert num_frames(16000) == 98
    assert num_frames(32000) == 198
    assert num_frames(80000) == 498  # a 5-s ESC-50 clip: padded to 512
    assert num_frames(400) == 1
    assert fbank(torch.from_numpy(tone(1.0, 16000))).shape == (98, 128)
    assert fbank(torch.zeros(100) + 0.1).shape == (1, 128)  # shorter than one window: padded


def test_pad_appends_zero_frames_and_cut_keeps_the_start() -> None:
    features = fbank(torch.from_numpy(tone(1.0, 16000)))
    padded = pad_or_cut(features, 128)
    assert padded.shape == (128, 128)
    assert torch.equal(padded[:98], features)
    assert torch.count_nonzero(padded[98:]) == 0
    cut = pad_or_cut(features, 50)
    assert cut.shape == (50, 128) and torch.equal(cut, features[:50])
    assert pad_or_cut(features, 98) is features


def test_normalize_is_mean_over_twice_std() -> None:
    x = torch.tensor([[-6.0, 4.0]])
    assert torch.allclose(normalize(x, -4.0, 2.0), torch.tensor([[-0.5, 2.0]]))


def test_any_rate_and_channel_layout_gives_the_mono_16k_features() -> None:
    left, right = tone(1.0, 44100, 500, seed=1), tone(1.0, 44100, 900, seed=2)
    stereo = np.stack([left, right])  # [channels, samples]
    mono16k = AF.resample(torch.from_numpy((left + right) / 2), 44100, 16000)
    expected = normalize(pad_or_cut(fbank(mono16k), 100), -5.0, 4.0)
    for layout in (stereo, stereo.T, torch.from_numpy(stereo)):
        got = waveform_to_fbank(layout, 44100, target_length=100, mean=-5.0, std=4.0)
        assert got.shape == (100, 128)
        assert torch.allclose(got, expected, atol=1e-5)


def test_waveform_mean_is_removed_before_the_fbank() -> None:
    wave = torch.from_numpy(tone(0.5, 16000))
    assert torch.allclose(fbank(wave + 0.2), fbank(wave), atol=1e-3)
    assert torch.allclose(
        raw_features(wave + 0.2, 16000, target_length=64),
        raw_features(wave, 16000, target_length=64),
        atol=1e-3,
    )


def test_fbank_sums_give_pooled_mean_and_std() -> None:
    a, b = torch.randn(30, 8) * 2 - 3, torch.randn(10, 8) + 1
    mean, std = (FbankSums.of(a) + FbankSums.of(b)).mean_std()
    both = torch.cat([a, b]).double()
    assert mean == pytest.approx(float(both.mean()), abs=1e-9)
    assert std == pytest.approx(float(both.std(unbiased=False)), abs=1e-9)
    with pytest.raises(ValueError):
        FbankSums().mean_std()
