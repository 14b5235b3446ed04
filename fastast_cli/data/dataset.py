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
    mix_targets,
    mix_waveforms,
    noise_and_roll,
    sample_mixup_lambda,
    spec_augment,
)
from fastast_cli.data.cache import ArrayCache, clip_key
from fastast_cli.data.checks import check_labelled
from fastast_cli.data.datafile import Entry, LabelSet, read_datafile, read_labels_csv
from fastast_cli.data.elastic_features import (
    draw_resolution,
    fit_native_length,
    shift_for_resolution,
)
from fastast_cli.data.features import (
    NUM_MEL_BINS,
    SAMPLE_RATE,
    fbank,
    normalize,
    pad_or_cut,
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

    def waveform(self, index: int) -> torch.Tensor:
        """Mono 16-kHz waveform `[samples]` of clip `index` (cached when `cache_waves`)."""
        path = self.entries[index].wav
        if self.cache is None or not self.cache_waves:
            return load_mono(path, SAMPLE_RATE)
        key = clip_key(path, "wave", sample_rate=SAMPLE_RATE)
        array = self.cache.get_or_compute("wave", key, lambda: load_mono(path, SAMPLE_RATE).numpy())
        return torch.from_numpy(np.array(array, dtype=np.float32))

    def clip_wave(self, index: int) -> torch.Tensor:
        """The waveform an item is made from (subclasses may cut it)."""
        return self.waveform(index)

    def features_of(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw fbank `[target_length, num_mel_bins]` of a 16-kHz waveform."""
        return pad_or_cut(fbank(wave, SAMPLE_RATE, self.num_mel_bins), self.target_length)

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

    def _mixed(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """AST mixup: raw fbank of λ·wave_i + (1-λ)·wave_j and the mixed target."""
        partner = int(torch.randint(len(self.entries), (1,)))
        lam = sample_mixup_lambda()
        wave = mix_waveforms(self.clip_wave(index), self.clip_wave(partner), lam)
        target = mix_targets(self.targets[index], self.targets[partner], lam)
        return self.features_of(wave), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup > 0.0 and float(torch.rand(())) < self.mixup:
            features, target = self._mixed(index)
        else:
            features, target = self.raw_fbank(index), self.targets[index].clone()
        if self.freqm or self.timem:
            features = spec_augment(features, self.freqm, self.timem)
        features = normalize(features, self.mean, self.std)
        if self.noise:
            features = noise_and_roll(features)
        return features.contiguous(), target


class NativeLengthDataset(ASTDataset):
    """Clips at their own length and a chosen time resolution, for ElasticAST (and for showing
    how a fixed-length AST fares off its training length and resolution).

    Per item, as ASTDataset: waveform (cut to `seconds` when given) → (mixup) → fbank with frames
    every 10 ms × q → native length, at most `target_length` frames (or, with `fixed_length`,
    padded/cut to exactly that many, as a fixed AST needs) → SpecAugment → normalize. In
    training q is drawn uniformly from `resolutions` per item; in evaluation q =
    `resolutions[0]`. The fbank depends on q, so only waveforms are cached (with `cache_dir`).
    Items are `(fbank [T_i, F], target [C])`; batch them with `collate_native`.
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
        seconds: float | None = None,
        fixed_length: bool = False,
        **options,
    ) -> None:
        super().__init__(datafile, labels_csv, target_length=target_length, mean=mean, std=std,
                         **options)
        self.resolutions = resolutions
        self.seconds = seconds
        self.fixed_length = fixed_length
        self.cache_waves = True

    def clip_wave(self, index: int) -> torch.Tensor:
        wave = self.waveform(index)
        return wave if self.seconds is None else wave[: int(self.seconds * SAMPLE_RATE)]

    def features_of(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw fbank of a waveform at this item's resolution q, native (or fixed) length."""
        low, high = self.resolutions
        q = draw_resolution(low, high) if self.training else low
        raw = fbank(wave, SAMPLE_RATE, self.num_mel_bins, shift_for_resolution(q))
        if self.fixed_length:
            return pad_or_cut(raw, self.target_length)
        return fit_native_length(raw, self.target_length)

    def raw_fbank(self, index: int) -> torch.Tensor:
        return self.features_of(self.clip_wave(index))
