"""`ASTDataset`: AST-format datafiles → (normalized fbank, multi-hot target) pairs for training.

Per item, in AST's order: (mixup of waveforms) → fbank → pad/cut → SpecAugment masks →
normalize → (noise + time roll). Augmentation runs only when `training=True`.

Caching (`cache_dir`): each clip's raw (un-normalized, padded/cut) fbank is computed once and
stored as `.npy`; later epochs load it and still draw fresh masks/noise every step. Mixup is
different: AST mixes *waveforms* before the fbank, and the log-mel of a mix is not the mix of
log-mels, so a mixed item cannot come from the fbank cache. With `mixup > 0` the dataset
therefore also caches each clip's decoded, 16-kHz mono waveform (`.npy`), so a mixed item skips
decoding and resampling and only recomputes the fbank of the mix; items that are not mixed (a
fraction 1 - mixup) still come from the fbank cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fastast_cli.data.audio import load_mono
from fastast_cli.data.augment import (
    fit_length,
    mask_band,
    mix_targets,
    mix_waveforms,
    noise_and_roll,
    sample_mixup_lambda,
    spec_augment,
)
from fastast_cli.data.cache import ArrayCache, clip_key
from fastast_cli.data.checks import check_labelled
from fastast_cli.data.datafile import Entry, LabelSet, read_datafile, read_labels_csv
from fastast_cli.data.elastic_features import draw_resolution, shift_for_resolution
from fastast_cli.data.features import (
    NUM_MEL_BINS,
    SAMPLE_RATE,
    LengthPolicy,
    normalize,
    waveform_fbank,
)
from fastast_cli.errors import FastASTError


def multi_hot(mids: tuple[str, ...], labels: LabelSet, where: str = "") -> torch.Tensor:
    """Target `[num_classes]` float32 with 1 at every listed mid; unknown mids are an error."""
    target = torch.zeros(len(labels), dtype=torch.float32)
    for mid in mids:
        if mid not in labels.index:
            raise FastASTError(f"{where}label {mid!r} is not in the labels CSV")
        target[labels.index[mid]] = 1.0
    return target


class ASTDataset(Dataset):
    """Clips of an AST JSON datafile as `(fbank [target_length, num_mel_bins], target [C])`.

    Both float32. `target` is multi-hot over the labels CSV's classes (mixed when mixup hits).
    `freqm`/`timem` (SpecAugment widths), `mixup` (probability) and `noise` (Speech Commands
    noise + roll) apply only with `training=True`. See the module docstring for `cache_dir`.
    With `return_mix`, items are `(fbank, target, partner, λ)`: the mixup partner's index and
    the first clip's weight (the item's own index and 1.0 when it is not mixed), so that
    anything stored per clip (cached teacher logits) can be mixed the same way. With
    `teacher_wave` = (rate, samples) an item ends with the same clip as audio for a teacher with
    its own front end: its waveform at `rate`, mixed with the same partner and λ, cut or padded
    to `samples` (`teacher_waveform`).
    """

    def __init__(
        self,
        datafile: str | os.PathLike[str],
        labels_csv: str | os.PathLike[str],
        *,
        target_length: int,
        mean: float,
        std: float,
        num_mel_bins: int = NUM_MEL_BINS,
        freqm: int = 0,
        timem: int = 0,
        mixup: float = 0.0,
        noise: bool = False,
        training: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        return_mix: bool = False,
    ) -> None:
        if not 0.0 <= mixup <= 1.0:
            raise FastASTError(f"mixup is a probability in [0, 1], got {mixup}")
        self.datafile = Path(datafile)
        self.labels = read_labels_csv(labels_csv)
        self.entries: list[Entry] = read_datafile(datafile)
        check_labelled(self.entries, self.datafile)
        where = f"{self.datafile}: "
        self.targets = (
            torch.stack([multi_hot(e.labels, self.labels, where) for e in self.entries])
            if self.entries
            else torch.zeros(0, len(self.labels))
        )
        self.target_length = target_length
        self.mean, self.std = float(mean), float(std)
        self.num_mel_bins = num_mel_bins
        self.training = training
        self.freqm, self.timem = (freqm, timem) if training else (0, 0)
        self.mixup = mixup if training else 0.0
        self.noise = noise and training
        self.cache = ArrayCache(cache_dir) if cache_dir is not None else None
        self.cache_waves = self.mixup > 0.0  # mixed items need waveforms, not fbanks
        self.return_mix = return_mix
        self.teacher_wave: tuple[int, int] | None = None  # (rate, samples); set by training

    @property
    def num_classes(self) -> int:
        """Number of classes in the labels CSV."""
        return len(self.labels)

    @property
    def label_names(self) -> list[str]:
        """Display names of the classes, in index order."""
        return list(self.labels.names)

    def __len__(self) -> int:
        return len(self.entries)

    def waveform(self, index: int, rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Mono waveform `[samples]` of clip `index` at `rate` (16 kHz: cached when
        `cache_waves`; a teacher's rate is decoded each time, not cached)."""
        path = self.entries[index].wav
        if self.cache is None or not self.cache_waves or rate != SAMPLE_RATE:
            return load_mono(path, rate)
        key = clip_key(path, "wave", sample_rate=SAMPLE_RATE)
        array = self.cache.get_or_compute("wave", key, lambda: load_mono(path, SAMPLE_RATE).numpy())
        return torch.from_numpy(np.array(array, dtype=np.float32))

    def clip_wave(self, index: int, rate: int = SAMPLE_RATE) -> torch.Tensor:
        """The waveform at `rate` an item is made from (subclasses may cut it)."""
        return self.waveform(index, rate)

    def teacher_waveform(self, index: int, partner: int, lam: float) -> torch.Tensor:
        """The item as audio for a teacher with its own front end [samples]: the clip at the
        teacher's rate, mixed as the student's (same partner, same λ, AST's `mix_waveforms`),
        cut or padded to the teacher's length. SpecAugment masks and Speech Commands noise act
        on the student's fbank only."""
        assert self.teacher_wave is not None
        rate, samples = self.teacher_wave
        wave = self.clip_wave(index, rate)
        if partner != index or lam != 1.0:
            wave = mix_waveforms(wave, self.clip_wave(partner, rate), lam)
        return fit_length(wave, samples).contiguous()

    def features_of(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw fbank `[target_length, num_mel_bins]` of a 16-kHz waveform."""
        return waveform_fbank(wave, SAMPLE_RATE, length=LengthPolicy.fixed(self.target_length),
                              num_mel_bins=self.num_mel_bins)

    def raw_fbank(self, index: int) -> torch.Tensor:
        """Un-normalized, padded/cut fbank `[target_length, num_mel_bins]` of clip `index`."""
        path = self.entries[index].wav
        if self.cache is None:
            return self.features_of(load_mono(path, SAMPLE_RATE))
        key = clip_key(
            path,
            "fbank",
            sample_rate=SAMPLE_RATE,
            num_mel_bins=self.num_mel_bins,
            target_length=self.target_length,
        )
        array = self.cache.get_or_compute(
            "fbank", key, lambda: self.features_of(load_mono(path, SAMPLE_RATE)).numpy()
        )
        return torch.from_numpy(np.array(array, dtype=np.float32))

    def _mixed_wave(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """AST mixup: the waveform λ·wave_i + (1-λ)·wave_j, the mixed target, j and λ."""
        partner = int(torch.randint(len(self.entries), (1,)))
        lam = sample_mixup_lambda()
        wave = mix_waveforms(self.clip_wave(index), self.clip_wave(partner), lam)
        target = mix_targets(self.targets[index], self.targets[partner], lam)
        return wave, target, partner, lam

    def _mixed(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """Raw fbank of the mixup of clip `index`, the mixed target, partner j and λ."""
        wave, target, partner, lam = self._mixed_wave(index)
        return self.features_of(wave), target, partner, lam

    def _mixup_hits(self) -> bool:
        return self.mixup > 0.0 and float(torch.rand(())) < self.mixup

    def __getitem__(self, index: int) -> tuple:
        if self._mixup_hits():
            features, target, partner, lam = self._mixed(index)
        else:
            features, target = self.raw_fbank(index), self.targets[index].clone()
            partner, lam = index, 1.0
        if self.freqm or self.timem:
            features = spec_augment(features, self.freqm, self.timem)
        features = normalize(features, self.mean, self.std)
        if self.noise:
            features = noise_and_roll(features)
        item: tuple = (features.contiguous(), target)
        if self.return_mix:
            item = (*item, partner, lam)
        if self.teacher_wave is not None:
            item = (*item, self.teacher_waveform(index, partner, lam))
        return item


class NativeLengthDataset(ASTDataset):
    """Clips at their own length and a chosen time resolution, for ElasticAST (and for showing
    how a fixed-length AST fares off its training length and resolution).

    Per item, as ASTDataset: waveform (cut to `seconds` when given) → (mixup) → fbank with frames
    every 10 ms × q → fitted by `length` (default: native length, at most `target_length`
    frames; a fixed AST's `input_spec().length_policy()` pads/cuts to exactly that many) →
    SpecAugment → normalize. In
    training q is drawn per item from `resolutions`: one of the whole steps low, low + 1, ...,
    high (`discrete`, ElasticAST's {1, 2, 3, 4}), or uniformly from [low, high]; in evaluation
    q = `resolutions[0]`. The time mask scales with the clip: at most timem × T_i /
    target_length frames, so it covers the same share of a clip at every length and q
    (`time_mask_width`). The fbank depends on q, so only waveforms are cached (`cache_dir`).
    Items are `(fbank [T_i, F], target [C])` (more with `return_mix`, and with `teacher_length`
    a last field: the same augmented clip at q = 1, padded or cut to `teacher_length` frames,
    for a fixed-length teacher); batch them with `collate_native`.
    """

    def __init__(
        self,
        datafile: str | os.PathLike[str],
        labels_csv: str | os.PathLike[str],
        *,
        target_length: int,
        mean: float,
        std: float,
        resolutions: tuple[float, float] = (1.0, 1.0),
        discrete: bool = True,
        seconds: float | None = None,
        length: LengthPolicy | None = None,
        teacher_length: int | None = None,
        **options,
    ) -> None:
        super().__init__(datafile, labels_csv, target_length=target_length, mean=mean, std=std,
                         **options)
        self.resolutions = resolutions
        self.discrete = discrete
        self.seconds = seconds
        self.length = length or LengthPolicy.native(target_length)
        self.teacher_length = teacher_length
        self.cache_waves = True

    def clip_wave(self, index: int, rate: int = SAMPLE_RATE) -> torch.Tensor:
        wave = self.waveform(index, rate)
        return wave if self.seconds is None else wave[: int(self.seconds * rate)]

    def resolution(self) -> float:
        """This item's q: drawn in training (see the class docstring), else `resolutions[0]`."""
        low, high = self.resolutions
        return draw_resolution(low, high, discrete=self.discrete) if self.training else low

    def features_at(self, wave: torch.Tensor, q: float) -> torch.Tensor:
        """Raw fbank of a waveform at resolution q, fitted by `self.length`."""
        return waveform_fbank(wave, SAMPLE_RATE, length=self.length, num_mel_bins=self.num_mel_bins,
                              frame_shift_ms=shift_for_resolution(q))

    def features_of(self, wave: torch.Tensor) -> torch.Tensor:
        return self.features_at(wave, self.resolution())

    def raw_fbank(self, index: int) -> torch.Tensor:
        return self.features_of(self.clip_wave(index))

    def time_mask_width(self, frames: int) -> int:
        """Widest time mask for a clip of `frames` frames: timem scaled by the clip's share of
        the full input (`target_length` frames at q = 1)."""
        return round(self.timem * min(frames, self.target_length) / self.target_length)

    def __getitem__(self, index: int) -> tuple:
        if self._mixup_hits():
            wave, target, partner, lam = self._mixed_wave(index)
        else:
            wave, target = self.clip_wave(index), self.targets[index].clone()
            partner, lam = index, 1.0
        q = self.resolution()
        raw = self.features_at(wave, q)
        features = raw.clone()
        freq_band = mask_band(features, 1, self.freqm) if self.freqm else (0, 0)
        time_band = (mask_band(features, 0, self.time_mask_width(len(features)))
                     if self.timem else (0, 0))
        features = normalize(features, self.mean, self.std)
        if self.noise:
            features = noise_and_roll(features)
        item: tuple = (features.contiguous(), target)
        if self.return_mix:
            item = (*item, partner, lam)
        if self.teacher_length is not None:
            item = (*item, self.teacher_view(wave, q, freq_band, time_band))
        elif self.teacher_wave is not None:
            item = (*item, self.teacher_waveform(index, partner, lam))
        return item

    def teacher_view(self, wave: torch.Tensor, q: float, freq_band: tuple[int, int],
                     time_band: tuple[int, int]) -> torch.Tensor:
        """The item's clip as a fixed-length teacher reads it: fbank at q = 1, padded or cut to
        `teacher_length` frames, with the item's frequency mask and its time mask moved to
        q = 1 frames (the same stretch of audio), normalized. (Speech Commands noise is not
        repeated on it.)"""
        raw = waveform_fbank(wave, SAMPLE_RATE, length=LengthPolicy.fixed(self.teacher_length),
                             num_mel_bins=self.num_mel_bins)
        start, width = freq_band
        raw[:, start : start + width] = 0.0
        start, width = time_band
        if width:
            raw[round(start * q) : round((start + width) * q)] = 0.0
        return normalize(raw, self.mean, self.std).contiguous()
