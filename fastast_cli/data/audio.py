"""Reading audio robustly: decode, check, downmix to mono, resample; and writing 16-bit WAV.

Every way a file can be unusable (unreadable, corrupt, empty, silent NaNs) becomes an
`AudioReadError` carrying the path and the reason, so callers can report and skip it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from fastast_cli.atomic import atomic_path
from fastast_cli.errors import FastASTError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au", ".w64", ".opus")

# WAV subtypes that every reader handles; anything else (8-bit, ADPCM, ...) gets converted.
PLAIN_WAV_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


class AudioReadError(FastASTError):
    """An audio file that cannot be used: unreadable, corrupt, empty or not finite."""


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 samples `[channels, samples]` in [-1, 1] and its sample rate."""
    if not Path(path).is_file():
        raise AudioReadError(f"{path}: file not found")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as error:
        raise AudioReadError(f"{path}: cannot decode audio ({_reason(error)})") from None
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: no audio samples (empty file)")
    if not np.isfinite(data).all():
        raise AudioReadError(f"{path}: samples are not finite (NaN or inf)")
    return np.ascontiguousarray(data.T), int(sample_rate)


def _reason(error: BaseException) -> str:
    """A one-line reason from a decoder exception."""
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def to_mono(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Average channels: `[channels, samples]` or `[samples]` → float32 tensor `[samples]`."""
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(
            f"expected a waveform [samples] or [channels, samples], got {tuple(wave.shape)}"
        )
    return wave.mean(dim=0)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of `[..., samples]` from `orig_rate` to `new_rate` Hz."""
    if orig_rate == new_rate:
        return wave
    return AF.resample(wave, orig_rate, new_rate)


def load_mono(path: str | os.PathLike[str], sample_rate: int = 16000) -> torch.Tensor:
    """Read any supported file as a mono float32 waveform `[samples]` at `sample_rate` Hz."""
    samples, rate = read_audio(path)
    return resample(to_mono(samples), rate, sample_rate)


def is_plain_wav(path: str | os.PathLike[str], sample_rate: int = 16000) -> bool:
    """True if the file is a mono WAV at `sample_rate` in a common PCM/float subtype.

    Such files are used in place by `prepare`; any other file is converted to 16-bit WAV.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False
    return (
        info.format in ("WAV", "WAVEX")
        and info.samplerate == sample_rate
        and info.channels == 1
        and info.subtype in PLAIN_WAV_SUBTYPES
    )


def write_wav(
    path: str | os.PathLike[str], wave: torch.Tensor | np.ndarray, sample_rate: int
) -> None:
    """Write a mono waveform `[samples]` as 16-bit PCM WAV, atomically; samples clip to [-1, 1]."""
    data = np.clip(torch.as_tensor(wave, dtype=torch.float32).numpy(), -1.0, 1.0)
    with atomic_path(Path(path)) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
