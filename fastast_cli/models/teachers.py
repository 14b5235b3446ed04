"""CNN teachers for cross-model knowledge distillation (CMKD, Gong et al. 2022).

A timm CNN backbone (EfficientNet-B2 by default) with one input channel reads the same
normalized fbank as the AST student, then pools and classifies:

    fbank [B, T, F] → image [B, 1, F, T] → features [B, C, f, t] → pooling → logits [B, classes]

`mean` pooling averages over frequency and time, then a linear layer (CMKD's CNN teacher).
`attention` pooling averages over frequency, then 4-head attention over time (PSLA's pooling),
returning logits rather than PSLA's probabilities, so the temperature τ applies directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from fastast_cli.models.inputs import InputSpec, stored_stats
from fastast_cli.models.records import ConfigRecord

# User-facing names → timm model names.
BACKBONES = {
    "efficientnet-b0": "efficientnet_b0",
    "efficientnet-b2": "efficientnet_b2",
    "mobilenetv3-small": "mobilenetv3_small_100",
}
POOLINGS = ("mean", "attention")
# Input of a CNN whose checkpoint does not record its own (AST's AudioSet input).
DEFAULT_FRAMES = 1024
DEFAULT_MEL_BINS = 128


@dataclass
class CNNConfig(ConfigRecord):
    """Everything needed to rebuild a CNN teacher; stored in its checkpoints."""

    num_classes: int
    backbone: str = "efficientnet-b2"
    pooling: str = "mean"
    heads: int = 4
    labels: list[str] = field(default_factory=list)


class MeanPool(nn.Module):
    """features [B, C, f, t] → mean over f and t → linear → logits [B, K]."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))


class AttentionPool(nn.Module):
    """features [B, C, f, t] → mean over f → per-head softmax attention over t → logits [B, K]."""

    def __init__(self, channels: int, num_classes: int, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.num_classes = heads, num_classes
        self.attention = nn.Linear(channels, heads * num_classes)
        self.classify = nn.Linear(channels, heads * num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        frames = features.mean(dim=2).transpose(1, 2)  # [B, t, C]
        shape = (*frames.shape[:2], self.heads, self.num_classes)
        weights = self.attention(frames).reshape(shape).softmax(dim=1)  # over time
        scores = self.classify(frames).reshape(shape)  # [B, t, H, K]
        return (weights * scores).sum(dim=1).mean(dim=1)


class CNNClassifier(nn.Module):
    """A 1-channel timm CNN with mean or attention pooling; `model(fbank)` → logits."""

    architecture = "cnn"  # the checkpoint tag (see models.checkpoints.save_checkpoint)
    merges_tokens = False

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(
                f"unknown CNN {config.backbone!r}: choose one of {', '.join(BACKBONES)}"
            )
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r}: use mean or attention")
        self.config = config
        self.meta: dict[str, Any] = {}
        self.backbone = timm.create_model(
            BACKBONES[config.backbone], pretrained=False, in_chans=1, num_classes=0, global_pool=""
        )
        channels = self.backbone.num_features
        self.pool = (
            MeanPool(channels, config.num_classes)
            if config.pooling == "mean"
            else AttentionPool(channels, config.num_classes, config.heads)
        )

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def input_spec(self) -> InputSpec:
        """Fixed-length fbanks; the length and mel bins it was trained on are in its meta
        (default 1024 × 128)."""
        meta = self.meta or {}
        return InputSpec(int(meta.get("target_length") or DEFAULT_FRAMES),
                         int(meta.get("num_mel_bins") or DEFAULT_MEL_BINS), False,
                         *stored_stats(meta))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        image = fbank.unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]
        return self.pool(self.backbone.forward_features(image))  # [B, C, f, t] pooled


def imagenet_to_one_channel(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ImageNet weights → 1-channel backbone: stem RGB kernels summed, classifier dropped."""
    converted = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    stem = converted.get("conv_stem.weight")
    if stem is not None and stem.shape[1] == 3:
        converted["conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
    return converted
