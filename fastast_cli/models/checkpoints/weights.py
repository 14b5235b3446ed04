"""The weights record every reader returns (each AST format, PaSST), and what a ViT state dict's
shapes tell."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastast_cli.errors import CheckpointError
from fastast_cli.models.ast import NUM_PREFIX_TOKENS, SIZES
from fastast_cli.models.checkpoints.files import StateDict
from fastast_cli.models.records import ConfigRecord

# What original AST and DeiT files do not store.
DEFAULT_STRIDE = 10
AST_LAYER_NORM_EPS = 1e-6

# Attention heads of the named sizes, by embedding width (files store no head count).
NUM_HEADS_BY_DIM = {size["embed_dim"]: size["num_heads"] for size in SIZES.values()}

HEAD_PREFIX = "mlp_head."

BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class PretrainedWeights:
    """A checkpoint read from disk, its tensors named as the model it initialises names them.

    state_dict: the tensors: `AST.state_dict()` names for every AST format (patch filters
        already 1-channel, unused heads dropped), `PaSSTClassifier.state_dict()` names for PaSST.
    config: the architecture the weights belong to (an `ASTConfig`, a `PaSSTConfig`);
        num_classes is 0 when there is no audio head.
    grid: the (frequency, time) patch grid that the positional embeddings cover.
    source: what the file was, in words, for messages.
    meta: a fastast checkpoint's metadata or a Hugging Face folder's normalization; else {}.
    """

    state_dict: StateDict
    config: ConfigRecord
    grid: tuple[int, int]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_head(self) -> bool:
        return self.config.num_classes > 0


def required(state_dict: StateDict, name: str, path: Path) -> torch.Tensor:
    if name not in state_dict:
        listed = ", ".join(list(state_dict)[:5])
        raise CheckpointError(
            f"{path} is not an AST or DeiT checkpoint: it has no {name} (its keys start with "
            f"{listed})"
        )
    return state_dict[name]


def vit_architecture(state_dict: StateDict, path: Path) -> dict[str, Any]:
    """ASTConfig fields that the tensor shapes of a ViT state dict determine."""
    embed_dim = required(state_dict, "cls_token", path).shape[-1]
    if embed_dim not in NUM_HEADS_BY_DIM:
        known = ", ".join(str(dim) for dim in NUM_HEADS_BY_DIM)
        raise CheckpointError(
            f"{path} has embedding size {embed_dim}; the head count is known only for {known}"
        )
    block_ids = {int(match.group(1)) for match in map(BLOCK_NAME.match, state_dict) if match}
    hidden = required(state_dict, "blocks.0.mlp.fc1.weight", path).shape[0]
    return {
        "embed_dim": embed_dim,
        "depth": len(block_ids),
        "num_heads": NUM_HEADS_BY_DIM[embed_dim],
        "mlp_ratio": hidden / embed_dim,
        "patch_size": state_dict["patch_embed.proj.weight"].shape[-1],
        "qkv_bias": "blocks.0.attn.qkv.bias" in state_dict,
        "layer_norm_eps": AST_LAYER_NORM_EPS,
    }


def num_classes_of(state_dict: StateDict) -> int:
    head = state_dict.get(f"{HEAD_PREFIX}1.weight")
    return 0 if head is None else head.shape[0]


def patch_count(state_dict: StateDict, path: Path) -> int:
    return required(state_dict, "pos_embed", path).shape[1] - NUM_PREFIX_TOKENS


def input_length(patches: int, patch_size: int, stride: int, common: tuple[int, ...]) -> int:
    """An input size (frames, mel bins) that `patches` patches of `patch_size` at `stride` cover,
    for files that store none: a `common` size if one fits, else the shortest."""
    shortest = (patches - 1) * stride + patch_size
    fitting = [n for n in common if shortest <= n < shortest + stride]
    return fitting[0] if fitting else shortest
