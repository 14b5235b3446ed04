"""PaSST teacher (Koutini et al. 2022) through the optional `hear21passt` package.

PaSST is a ViT with factorized frequency/time positional embeddings and structured patchout
(random time and frequency patch columns dropped in training). Here it reads the same normalized
fbank as the AST student, so teacher and student see one input (consistent teaching):

    fbank [B, T, F] → [B, 1, F, T] → PaSST → logits [B, classes]

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


class PaSSTClassifier(nn.Module):
    """hear21passt's PaSST-S on AST fbanks; `model(fbank)` → logits."""

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

        passt.first_RUN = False  # the package prints shapes on its first forward otherwise
        self.config = config
        self.meta: dict[str, Any] = {}
        self.net = passt.get_model(
            arch=ARCH, pretrained=False, n_classes=config.num_classes, in_channels=1,
            fstride=config.fstride, tstride=config.tstride, input_fdim=config.num_mel_bins,
            input_tdim=config.target_length, s_patchout_t=config.patchout_time,
            s_patchout_f=config.patchout_freq,
        )

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def input_spec(self) -> InputSpec:
        """Fixed-length fbanks [B, target_length, num_mel_bins], with the stored stats."""
        return InputSpec(self.config.target_length, self.config.num_mel_bins, False,
                         *stored_stats(self.meta))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(fbank.unsqueeze(1).transpose(2, 3))  # input [B, 1, F, T]
        return logits
