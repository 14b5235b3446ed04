"""Any classifier this toolkit trains (AST student or teacher, CNN teacher), by name or file."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.models.ast import AST, build_model
from fastast_cli.models.checkpoints import (
    init_from_pretrained,
    load_checkpoint,
    read_state_dict,
)
from fastast_cli.models.checkpoints.fitting import fit_weights, load_exactly
from fastast_cli.models.checkpoints.passt import read_passt_weights
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.models.passt import PaSSTClassifier, PaSSTConfig
from fastast_cli.models.reduction.schedule import RSchedule
from fastast_cli.models.reduction.settings import MergeSettings
from fastast_cli.models.teachers import (
    BACKBONES,
    CNNClassifier,
    CNNConfig,
    imagenet_to_one_channel,
)

PathLike = str | os.PathLike[str]
ARCHITECTURES = ("ast", *BACKBONES, "passt")


def build_classifier(
    name: str,
    labels: list[str],
    *,
    target_length: int,
    num_mel_bins: int = 128,
    size: str = "base",
    depth: int = 12,
    fstride: int = 10,
    tstride: int = 10,
    pooling: str = "mean",
    pretrained: PathLike | None = None,
    elastic: bool = False,
    max_tokens: int = 2048,
    front_end: str = "fbank",
    elastic_choices: Mapping[str, str] | None = None,
) -> nn.Module:
    """A new classifier over `labels` for fbanks of `target_length` × `num_mel_bins`.

    name: `ast` (of `size`, `depth` blocks, strides `fstride`/`tstride`), a CNN of `BACKBONES`,
        or `passt` (needs the optional hear21passt package).
    elastic: for `ast`, an ElasticAST (native-length clips packed in rows of `max_tokens`) with
        the same weights; its positional tables come from the built (or pretrained) AST grid.
        elastic_choices: its pooling, position fit and token dropout mode (ElasticConfig;
        `models.elastic.PUBLISHED` for ElasticAST's; default: the config's).
    pretrained: initial weights. For AST any checkpoint `load_model` reads (AudioSet, HF, DeiT;
        positions adapted, head re-created when the class count differs); for a CNN timm
        ImageNet weights of the same backbone (stem summed to one channel); for PaSST a PaSST
        state dict (time positions adapted).
    front_end: for `passt`, `fbank` (AST's fbank) or `passt` (32-kHz waveforms through
        hear21passt's own mels, as its released weights were trained).
    """
    if name == "ast":
        model = build_model(
            size, len(labels), target_length=target_length, num_mel_bins=num_mel_bins,
            depth=depth, fstride=fstride, tstride=tstride, labels=list(labels),
        )
        if pretrained is not None:
            init_from_pretrained(model, pretrained)
        if elastic:  # factorized positions from the 2-D grid; clips up to target_length frames
            return ElasticAST.from_ast(model, target_length=target_length, max_tokens=max_tokens,
                                       **(elastic_choices or {}))
        return model
    if name in BACKBONES:
        model = CNNClassifier(CNNConfig(len(labels), name, pooling, labels=list(labels)))
        if pretrained is not None:
            _load_cnn_backbone(model, pretrained)
        return model
    if name == "passt":
        model = PaSSTClassifier(PaSSTConfig(
            len(labels), target_length=target_length, num_mel_bins=num_mel_bins,
            fstride=fstride, tstride=tstride, labels=list(labels), front_end=front_end,
        ))
        if pretrained is not None:
            fit_weights(model, read_passt_weights(pretrained), pretrained)
        return model
    raise FastASTError(f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)}")


def _load_cnn_backbone(model: CNNClassifier, path: PathLike) -> None:
    """ImageNet weights of the same timm backbone into `model.backbone`, strictly."""
    weights = imagenet_to_one_channel(read_state_dict(path))
    load_exactly(model.backbone, weights, f"{path}: ImageNet weights for {model.config.backbone}")


def load_classifier(
    path: PathLike,
    r: RSchedule | float | None = None,
    *,
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    method: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Any trained classifier, in eval mode, ready to run as the command line runs it: fastast
    AST, ElasticAST, CNN or PaSST checkpoints, original AST `.pth` files and Hugging Face AST
    folders (read by `load_checkpoint`). Use it when the architecture is not known in advance
    (`evaluate`, `predict`, `sweep`); `load_model` is the AST-only loader that can also re-shape
    the input or replace the head.

    Models that merge tokens merge as their checkpoint records (`MergeSettings`; none recorded:
    no merging, proportional attention on); `r`, `schedule`, `proportional_attention` and
    `method` (a name in `models.reduction.METHODS`) override what they are given for. The
    settings used are in `model.merging`.
    """
    model = load_checkpoint(path, device=device)
    if not model.merges_tokens:
        return model
    settings = MergeSettings.from_meta(model.meta).overridden(
        r, schedule, proportional_attention, method)
    try:
        return settings.apply(model)
    except (ValueError, TypeError) as error:  # e.g. a damaged merging record
        raise FastASTError(f"{path}: token merging settings {settings.to_meta()} do not "
                           f"apply ({error})") from None


def model_kind(model: nn.Module) -> str:
    """The name a model goes by on the command line: ast, passt, or the CNN's backbone."""
    if model.architecture in (AST.architecture, ElasticAST.architecture):
        return "ast"
    if model.architecture == PaSSTClassifier.architecture:
        return "passt"
    return model.config.backbone
