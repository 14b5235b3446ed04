"""Original AST checkpoints (`audioset_10_10_0.4593.pth`): a DataParallel state dict
`module.v.*` / `module.mlp_head.*`. The architecture is read from the tensor shapes; the
strides, which the file does not store, default to 10/10."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastast_cli.data.features import AST_NORM_STATS
from fastast_cli.errors import CheckpointError
from fastast_cli.models.ast import ASTConfig
from fastast_cli.models.checkpoints.files import StateDict
from fastast_cli.models.checkpoints.weights import (
    DEFAULT_STRIDE,
    PretrainedWeights,
    input_length,
    num_classes_of,
    patch_count,
    vit_architecture,
)

AST_NUM_MEL_BINS = 128

# The original AST's mlp_head LayerNorm is torch's default.
AST_HEAD_LAYER_NORM_EPS = 1e-5

# Input lengths of the AST recipes (AudioSet, ESC-50, Speech Commands); preferred when a time
# grid fits several lengths.
COMMON_TARGET_LENGTHS = (1024, 512, 128)

# Heads of timm / original checkpoints that AST does not use.
UNUSED_PREFIXES = ("head.", "head_dist.")
# Leading names of wrapped or DataParallel state dicts: `module.v.blocks.0...` → `blocks.0...`.
WRAPPER_PREFIX = re.compile(r"^(?:module\.)?(?:v\.)?")


def strip_wrapper_prefixes(state_dict: StateDict) -> StateDict:
    """`module.v.blocks.0.*` → `blocks.0.*`, `module.mlp_head.*` → `mlp_head.*`; unused heads go."""
    renamed = {WRAPPER_PREFIX.sub("", name, count=1): tensor for name, tensor in state_dict.items()}
    return {name: t for name, t in renamed.items() if not name.startswith(UNUSED_PREFIXES)}


def original_ast_weights(
    state_dict: StateDict, path: Path, fstride: int | None, tstride: int | None
) -> PretrainedWeights:
    """Original AST: 128 mel bins; the strides (given, else 10/10) and pos_embed give the grid."""
    architecture = vit_architecture(state_dict, path)
    fstride, tstride = fstride or DEFAULT_STRIDE, tstride or DEFAULT_STRIDE
    patch_size = architecture["patch_size"]
    f_dim = (AST_NUM_MEL_BINS - patch_size) // fstride + 1
    num_patches = patch_count(state_dict, path)
    if num_patches % f_dim:
        raise CheckpointError(
            f"{path} has {num_patches} patch positions, which do not split into {f_dim} "
            f"frequency rows (fstride {fstride}): pass the strides it was trained with "
            "(the file name tells: audioset_12_12_* → fstride=12, tstride=12)"
        )
    t_dim = num_patches // f_dim
    config = ASTConfig(
        num_classes=num_classes_of(state_dict),
        fstride=fstride,
        tstride=tstride,
        num_mel_bins=AST_NUM_MEL_BINS,
        target_length=input_length(t_dim, patch_size, tstride, COMMON_TARGET_LENGTHS),
        head_layer_norm_eps=AST_HEAD_LAYER_NORM_EPS,
        **architecture,
    )
    return PretrainedWeights(state_dict, config, (f_dim, t_dim), "original AST checkpoint",
                             _original_normalization(path))


def _original_normalization(path: Path) -> dict[str, Any]:
    """Input mean/std of an original AST file, which stores none: AST's statistics of the data
    its file name names (`speechcommands_*`, `esc50_*`), else AudioSet's (every other released
    AST checkpoint). Evaluation and prediction both read them from the model's meta."""
    name = path.name.lower()
    dataset = next((d for d in AST_NORM_STATS if name.startswith(d)), "audioset")
    mean, std = AST_NORM_STATS[dataset]
    return {"mean": mean, "std": std,
            "stats_note": f"the original AST checkpoint stores no input mean/std: using AST's "
                          f"{dataset} statistics (mean {mean}, std {std})"}

