"""PaSST teacher (Koutini et al. 2022) through the optional `hear21passt` package.

PaSST is a ViT with factorized frequency/time positional embeddings and structured patchout
(random time and frequency patch columns dropped in training). Its input is one of two front
ends (`PaSSTConfig.front_end`):

    passt: waveform [B, samples] at 32 kHz → hear21passt's own mels (`AugmentMelSTFT`: 128
           mels, window 800, hop 320, n_fft 1024, as `hear21passt.base.get_basic_model`)
           → [B, 1, 128, T] → PaSST → logits [B, classes]. The released weights' front end;
           a distillation teacher reads the student's augmented clip as audio (training.teacher).
    fbank: AST's normalized Kaldi fbank [B, T, F] → [B, 1, F, T] → PaSST (PaSSTs trained by
           `train-teacher`, and every checkpoint saved before the front end was recorded).

Weights: `--pretrained` takes a local PaSST state-dict file (e.g. the AudioSet
`passt-s-f128-p16-s10-ap.476-swa.pt` release, downloaded by you); the time positional table is
cut or interpolated to the model's length, the head is re-created when the class count differs
(read by models/checkpoints/passt.py, fitted by models/checkpoints/fitting.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.models.inputs import InputSpec, stored_stats
from fastast_cli.models.records import ConfigRecord

ARCH = "passt_s_swa_p16_128_ap476"
PATCH_SIZE = 16
FRONT_ENDS = ("fbank", "passt")
# hear21passt.base.get_basic_model's mel front end (its fmax None means sr/2 - fmax_aug_range/2).
PASST_MELS = {"n_mels": 128, "sr": 32000, "win_length": 800, "hopsize": 320, "n_fft": 1024,
              "htk": False, "fmin": 0.0, "fmax": 15000, "norm": 1, "fmin_aug_range": 10,
              "fmax_aug_range": 2000}


def passt_available() -> bool:
    return importlib.util.find_spec("hear21passt") is not None


@dataclass
class PaSSTConfig(ConfigRecord):
    """Everything needed to rebuild a PaSST teacher; stored in its checkpoints."""

    num_classes: int
    target_length: int = 1024
    num_mel_bins: int = 128
    fstride: int = 10
    tstride: int = 10
    patchout_time: int = 40  # time patch columns dropped in training (PaSST-S: 40 of ~99)
    patchout_freq: int = 4  # frequency patch rows dropped in training
    labels: list[str] = field(default_factory=list)
    front_end: str = "fbank"  # FRONT_ENDS; checkpoints that record none read fbanks


class PaSSTClassifier(nn.Module):
    """hear21passt's PaSST-S; `model(x)` → logits, x a waveform [B, samples] at 32 kHz (front
    end `passt`) or an AST fbank [B, T, F] (`fbank`)."""

    architecture = "passt"
    merges_tokens = False
    head_prefixes = ("net.head.", "net.head_dist.")  # the tensors a new class count re-creates

    def __init__(self, config: PaSSTConfig) -> None:
        super().__init__()
        if not passt_available():
            raise FastASTError(
                "--model passt needs the optional package hear21passt: "
                "pip install 'fastast[passt]' (or pip install hear21passt)"
            )
        from hear21passt.models import passt
        from hear21passt.models.preprocess import AugmentMelSTFT

        if config.front_end not in FRONT_ENDS:
            raise FastASTError(f"PaSST front end {config.front_end!r}: not one of "
                               f"{', '.join(FRONT_ENDS)}")
        passt.first_RUN = False  # the package prints shapes on its first forward otherwise
        self.config = config
        self.meta: dict[str, Any] = {}
        self.net = passt.get_model(
            arch=ARCH, pretrained=False, n_classes=config.num_classes, in_channels=1,
            fstride=config.fstride, tstride=config.tstride, input_fdim=config.num_mel_bins,
            input_tdim=config.target_length, s_patchout_t=config.patchout_time,
            s_patchout_f=config.patchout_freq,
        )
        # Masks are the data pipeline's (freqm = timem = 0 here); mels are not parameters, so
        # checkpoints of either front end hold the same tensors.
        self.mel = (AugmentMelSTFT(**PASST_MELS, freqm=0, timem=0)
                    if config.front_end == "passt" else None)

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def input_spec(self) -> InputSpec:
        """Fixed-length fbanks [B, target_length, num_mel_bins] with the stored stats; with its
        own front end, 32-kHz waveforms of target_length hops."""
        if self.mel is not None:
            return InputSpec(self.config.target_length, self.config.num_mel_bins,
                             waveform_rate=PASST_MELS["sr"])
        return InputSpec(self.config.target_length, self.config.num_mel_bins, False,
                         *stored_stats(self.meta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mel is not None:
            if x.ndim != 2:
                raise FastASTError("this PaSST reads 32-kHz waveforms [B, samples] through its "
                                   f"own front end, not input of shape {list(x.shape)}")
            with torch.autocast(x.device.type, enabled=False):  # the STFT in float32
                mels = self.mel(x.float())  # waveform [B, samples] → [B, F, T]
        else:
            mels = x.transpose(1, 2)  # fbank [B, T, F] → [B, F, T]
        logits, _ = self.net(mels.unsqueeze(1))  # input [B, 1, F, T]
        return logits
