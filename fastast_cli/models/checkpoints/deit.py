"""timm DeiT ImageNet weights (`deit_base_distilled_patch16_384`): the RGB patch filters are
summed to one channel, the ImageNet heads dropped and the audio head left to be initialised."""

from __future__ import annotations

from pathlib import Path

from fastast_cli.errors import CheckpointError
from fastast_cli.models.ast import ASTConfig
from fastast_cli.models.checkpoints.files import StateDict
from fastast_cli.models.checkpoints.weights import (
    DEFAULT_STRIDE,
    PretrainedWeights,
    patch_count,
    vit_architecture,
)
from fastast_cli.models.pos_embed import square_grid


def deit_weights(
    state_dict: StateDict, path: Path, fstride: int | None, tstride: int | None
) -> PretrainedWeights:
    """timm DeiT: RGB filters [D, 3, p, p] summed to [D, 1, p, p]; pos_embed on a square grid."""
    if "dist_token" not in state_dict:
        raise CheckpointError(
            f"{path} is an ImageNet ViT without dist_token; AST starts from a distilled DeiT "
            "(deit_*_distilled_patch16_*)"
        )
    state_dict = dict(state_dict)
    filters = state_dict["patch_embed.proj.weight"]
    state_dict["patch_embed.proj.weight"] = filters.sum(dim=1, keepdim=True)
    try:
        grid = square_grid(patch_count(state_dict, path))
    except ValueError as error:
        raise CheckpointError(f"{path}: DeiT pos_embed is not square ({error})") from error
    config = ASTConfig(
        num_classes=0,
        fstride=fstride or DEFAULT_STRIDE,
        tstride=tstride or DEFAULT_STRIDE,
        **vit_architecture(state_dict, path),
    )
    return PretrainedWeights(state_dict, config, grid, "timm DeiT ImageNet weights")
