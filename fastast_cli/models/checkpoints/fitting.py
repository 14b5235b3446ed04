"""Fitting a weights record into an AST: the model's config, position-embedding adaptation,
a fresh head when the class count differs, and one check naming every tensor that does not fit."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.models.ast import AST, NUM_PREFIX_TOKENS, ASTConfig
from fastast_cli.models.checkpoints.files import PathLike, StateDict
from fastast_cli.models.checkpoints.weights import HEAD_PREFIX, PretrainedWeights, num_classes_of
from fastast_cli.models.pos_embed import resample_pos_embed

logger = logging.getLogger(__name__)


# Longest list of names one mismatch error shows per kind of problem.
MAX_LISTED = 8


def model_config(
    weights: PretrainedWeights,
    path: PathLike,
    num_classes: int | None,
    target_length: int | None,
    fstride: int | None,
    tstride: int | None,
) -> ASTConfig:
    """The checkpoint's config with the caller's input shape and class count."""
    if num_classes is None and not weights.has_head:
        raise CheckpointError(
            f"{path} ({weights.source}) has no audio classification head: pass num_classes"
        )
    values = weights.config.to_dict()
    given = {"target_length": target_length, "fstride": fstride, "tstride": tstride}
    values.update({key: value for key, value in given.items() if value is not None})
    if num_classes is not None and num_classes != weights.config.num_classes:
        values.update(num_classes=num_classes, labels=[])
    config = ASTConfig.from_dict(values)
    if min(config.grid) < 1:
        raise FastASTError(
            f"target_length {config.target_length} × {config.num_mel_bins} mel bins is smaller "
            f"than one {config.patch_size}×{config.patch_size} patch"
        )
    if config.num_heads < 1 or config.embed_dim % config.num_heads:
        raise CheckpointError(
            f"{path} ({weights.source}) has an unusable model config: embed_dim "
            f"{config.embed_dim} does not split into {config.num_heads} attention heads"
        )
    return config


def fit_weights(model: AST, weights: PretrainedWeights, path: PathLike) -> None:
    """Adapt `weights` to `model` (pos_embed grid, head) and load them; notes go to the log."""
    state_dict = dict(weights.state_dict)
    notes = [f"read {path} as {weights.source}"]
    if weights.grid != model.config.grid and "pos_embed" in state_dict:
        state_dict["pos_embed"] = _adapt_pos_embed(state_dict["pos_embed"], weights, model, path)
        notes.append(
            "positional embeddings adapted from the {}×{} patch grid to {}×{}".format(
                *weights.grid, *model.config.grid
            )
        )
    new_head = not _head_fits(state_dict, model)
    if new_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIX)}
        notes.append(
            f"classification head left freshly initialised for {model.config.num_classes} "
            f"classes (checkpoint: {num_classes_of(weights.state_dict) or 'no audio head'})"
        )
    _check_fit(model, state_dict, weights, path, allow_missing_head=new_head)
    model.load_state_dict(state_dict, strict=not new_head)
    model.load_notes = notes
    for note in notes:
        logger.info(note)


def _adapt_pos_embed(
    pos_embed: torch.Tensor, weights: PretrainedWeights, model: AST, path: PathLike
) -> torch.Tensor:
    try:
        return resample_pos_embed(pos_embed, weights.grid, model.config.grid, NUM_PREFIX_TOKENS)
    except ValueError as error:
        message = f"{path}: cannot adapt its positional embeddings ({error})"
        raise CheckpointError(message) from error


def _head_fits(state_dict: StateDict, model: AST) -> bool:
    return num_classes_of(state_dict) == model.config.num_classes


def _check_fit(
    model: AST,
    state_dict: StateDict,
    weights: PretrainedWeights,
    path: PathLike,
    allow_missing_head: bool,
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and wrongly shaped tensor."""
    skipped = HEAD_PREFIX if allow_missing_head else None
    problems = mismatches(model.state_dict(), state_dict, may_miss=skipped)
    if weights.config.num_heads != model.config.num_heads:
        problems.append(
            f"  attention heads: checkpoint {weights.config.num_heads} "
            f"vs model {model.config.num_heads}"
        )
    if problems:
        config = model.config
        raise CheckpointError(
            f"{path} ({weights.source}) does not fit the model (embed_dim {config.embed_dim}, "
            f"depth {config.depth}, {config.num_heads} heads):\n" + "\n".join(problems)
        )


def load_exactly(model: nn.Module, state_dict: StateDict, what: str) -> None:
    """Load `state_dict` into `model` when every tensor fits by name and shape, else raise one
    CheckpointError naming what does not (`what`: the weights, in words)."""
    problems = mismatches(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{what} do not fit the model:\n" + "\n".join(problems))
    model.load_state_dict(state_dict)


def mismatches(
    expected: Mapping[str, torch.Tensor], state_dict: StateDict, may_miss: str | None = None
) -> list[str]:
    """Indented lines naming the wrongly shaped, missing and unexpected tensors of `state_dict`
    against a model's `expected` ones; names starting with `may_miss` may be missing."""
    missing = [name for name in expected
               if name not in state_dict and not (may_miss and name.startswith(may_miss))]
    unexpected = [name for name in state_dict if name not in expected]
    wrong_shape = [
        f"{name}: checkpoint {list(tensor.shape)} vs model {list(expected[name].shape)}"
        for name, tensor in state_dict.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    problems = _listing("wrongly shaped", wrong_shape) + _listing("missing", missing)
    return problems + _listing("unexpected", unexpected)


def _listing(kind: str, names: list[str]) -> list[str]:
    """Indented lines for one kind of problem, at most MAX_LISTED names and a count of the rest."""
    if not names:
        return []
    lines = [f"  {kind} ({len(names)}):"] + [f"    {name}" for name in names[:MAX_LISTED]]
    if len(names) > MAX_LISTED:
        lines.append(f"    ... and {len(names) - MAX_LISTED} more")
    return lines
