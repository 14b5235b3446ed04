"""CNN teachers for cross-model knowledge distillation (CMKD, Gong et al. 2022).

A timm CNN backbone (EfficientNet-B2 by default) with one input channel reads the same
normalized fbank as the AST student, then pools and classifies:

    fbank [B, T, F] → image [B, 1, F, T] → features [B, C, f, t] → pooling → logits [B, classes]

`mean` pooling averages over frequency and time, then a linear layer (CMKD's CNN teacher).
`attention` pooling is PSLA's (Gong, Chung and Glass 2021, "PSLA: Improving Audio Tagging with
Pretraining, Sampling, Labeling, and Aggregation"; its code's `MHeadAttention`): features
averaged over frequency, then per head a sigmoid attention over time normalised by its sum,
sigmoid class scores, their attention-weighted sum, and the heads added with learned weights.
PSLA outputs those probabilities; here the model returns their logits log(p / (1 − p)), so that
every classifier returns logits and the temperature τ applies to them.

Checkpoints written before PSLA's pooling (their config has no `pooling_version`) hold a softmax
attention under the name `attention`; they load with it (`SoftmaxAttentionPool`) and score as
they always did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
# What `attention` means: 1 = the softmax attention of checkpoints written before PSLA's pooling
# (kept only to load them), 2 = PSLA's. New models get POOLING_VERSION.
SOFTMAX_POOLING_VERSION = 1
POOLING_VERSION = 2
# PSLA clamps its attention to [ε, 1 − ε] before normalising; the probabilities are clamped the
# same way before they become logits, so a logit is finite (|logit| <= 16.1).
PSLA_EPSILON = 1e-7
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
    pooling_version: int = POOLING_VERSION

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CNNConfig:
        """A stored config; one without `pooling_version` predates PSLA's pooling."""
        return super().from_dict({"pooling_version": SOFTMAX_POOLING_VERSION, **values})


class MeanPool(nn.Module):
    """features [B, C, f, t] → mean over f and t → linear → logits [B, K]."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))


class PSLAAttentionPool(nn.Module):
    """PSLA's multi-head attention pooling; features [B, C, f, t] → logits [B, K].

    Per head h, on the frequency-averaged frames x_t [C]:
        a_ht = clamp(sigmoid(W_a,h x_t + b_a,h), ε, 1 − ε)     attention [K]
        c_ht = sigmoid(W_c,h x_t + b_c,h)                      class scores [K]
        p_h  = Σ_t (a_ht / Σ_t' a_ht') c_ht                    [K]
    p = Σ_h w_h p_h with learned head weights w (initially 1/H); logits = log(p / (1 − p)),
    p clamped to [ε, 1 − ε]. Computed in float32 (1 − ε is not a float16).
    """

    def __init__(self, channels: int, num_classes: int, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.num_classes = heads, num_classes
        self.attention = nn.Linear(channels, heads * num_classes)
        self.classify = nn.Linear(channels, heads * num_classes)
        self.head_weights = nn.Parameter(torch.full((heads,), 1.0 / heads))
        for layer in (self.attention, self.classify):  # He-uniform weights, zero bias (PSLA)
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """PSLA's output: clip-level probabilities [B, K]."""
        with torch.autocast(features.device.type, enabled=False):
            frames = features.float().mean(dim=2).transpose(1, 2)  # [B, t, C]
            shape = (*frames.shape[:2], self.heads, self.num_classes)
            attention = self.attention(frames).sigmoid().reshape(shape)  # [B, t, H, K]
            attention = attention.clamp(PSLA_EPSILON, 1 - PSLA_EPSILON)
            attention = attention / attention.sum(dim=1, keepdim=True)  # over time
            scores = self.classify(frames).sigmoid().reshape(shape)  # [B, t, H, K]
            per_head = (attention * scores).sum(dim=1)  # [B, H, K]
            return (per_head * self.head_weights[:, None]).sum(dim=1)  # [B, K]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = self.probabilities(features).clamp(PSLA_EPSILON, 1 - PSLA_EPSILON)
        return probabilities.log() - (1 - probabilities).log()  # [B, K]


class SoftmaxAttentionPool(nn.Module):
    """The `attention` pooling of checkpoints written before PSLA's (pooling_version 1), kept
    only so that they load and score unchanged: features [B, C, f, t] → mean over f → per-head
    softmax attention over t of linear scores → mean over heads → logits [B, K]."""

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
    """A 1-channel timm CNN with mean or PSLA attention pooling; `model(fbank)` → logits."""

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
        if config.pooling_version not in (SOFTMAX_POOLING_VERSION, POOLING_VERSION):
            raise ValueError(f"unknown pooling version {config.pooling_version!r}")
        self.config = config
        self.meta: dict[str, Any] = {}
        import timm  # here, not at the top: timm imports torchvision and torch._dynamo (~3 s)

        self.backbone = timm.create_model(
            BACKBONES[config.backbone], pretrained=False, in_chans=1, num_classes=0, global_pool=""
        )
        self.pool = pooling_layer(config, self.backbone.num_features)

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


def pooling_layer(config: CNNConfig, channels: int) -> nn.Module:
    """The pooling head `config` names, over `channels` backbone features."""
    if config.pooling == "mean":
        return MeanPool(channels, config.num_classes)
    if config.pooling_version == SOFTMAX_POOLING_VERSION:
        return SoftmaxAttentionPool(channels, config.num_classes, config.heads)
    return PSLAAttentionPool(channels, config.num_classes, config.heads)


def imagenet_to_one_channel(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ImageNet weights → 1-channel backbone: stem RGB kernels summed, classifier dropped."""
    converted = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    stem = converted.get("conv_stem.weight")
    if stem is not None and stem.shape[1] == 3:
        converted["conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
    return converted
