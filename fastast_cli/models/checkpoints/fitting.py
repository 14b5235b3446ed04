"""Fitting a weights record into a model (an AST, a PaSST teacher): the model's config,
position-embedding adaptation, a fresh head when the class count differs, and one check naming
every tensor that does not fit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.models.ast import AST, NUM_PREFIX_TOKENS, ASTConfig
from fastast_cli.models.checkpoints.files import PathLike, StateDict
from fastast_cli.models.checkpoints.passt import TIME_TABLE
from fastast_cli.models.checkpoints.weights import PretrainedWeights
from fastast_cli.models.passt import PaSSTClassifier
from fastast_cli.models.pos_embed import fit_time_table, resample_pos_embed

logger = logging.getLogger(__name__)


# Longest list of names one mismatch error shows per kind of problem.
MAX_LISTED = 8

# Config settings that tensor shapes do not show, compared by name: their words in messages.
UNSEEN_SETTINGS = {"num_heads": "attention heads"}
# What a fit error says of the model, where its config has them.
DESCRIBED = ("embed_dim", "depth", "num_heads")


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


def fit_weights(model: nn.Module, weights: PretrainedWeights, path: PathLike) -> None:
    """Adapt `weights` to `model` (an AST or a PaSST teacher) and load them: positional
    embeddings adapted to the model's patch grid, a fresh head when the class count differs,
    then one check naming every tensor that does not fit. Notes go to the log and to
    `model.load_notes`."""
    state_dict = dict(weights.state_dict)
    notes = [f"read {path} as {weights.source}"]
    notes += ADAPT_POSITIONS[model.architecture](state_dict, weights, model, path)
    expected = model.state_dict()
    new_head = not _head_fits(state_dict, expected, model.head_prefixes)
    if new_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(model.head_prefixes)}
        notes.append(
            f"classification head left freshly initialised for {model.config.num_classes} "
            f"classes (checkpoint: {weights.config.num_classes or 'no audio head'})"
        )
    _check_fit(model, expected, state_dict, weights, path, allow_missing_head=new_head)
    model.load_state_dict(state_dict, strict=not new_head)
    model.load_notes = notes
    for note in notes:
        logger.info(note)


def _adapt_ast_positions(
    state_dict: StateDict, weights: PretrainedWeights, model: AST, path: PathLike
) -> list[str]:
    """AST's `pos_embed` resampled from the weights' patch grid to the model's (in place)."""
    if weights.grid == model.config.grid or "pos_embed" not in state_dict:
        return []
    try:
        state_dict["pos_embed"] = resample_pos_embed(
            state_dict["pos_embed"], weights.grid, model.config.grid, NUM_PREFIX_TOKENS)
    except ValueError as error:
        message = f"{path}: cannot adapt its positional embeddings ({error})"
        raise CheckpointError(message) from error
    return ["positional embeddings adapted from the {}×{} patch grid to {}×{}".format(
        *weights.grid, *model.config.grid)]


def _adapt_passt_positions(
    state_dict: StateDict, weights: PretrainedWeights, model: PaSSTClassifier, path: PathLike
) -> list[str]:
    """PaSST's time table cut or interpolated to the model's columns (in place); its frequency
    table must fit as it is."""
    expected = model.net.time_new_pos_embed.shape[-1]
    table = state_dict[TIME_TABLE]
    if table.shape[-1] == expected:
        return []
    state_dict[TIME_TABLE] = fit_time_table(table, expected)
    return [f"time positions adapted from {table.shape[-1]} to {expected} columns"]


# Positional-embedding adaptation by the architecture of the model the weights go into.
ADAPT_POSITIONS: dict[str, Callable[..., list[str]]] = {
    AST.architecture: _adapt_ast_positions,
    PaSSTClassifier.architecture: _adapt_passt_positions,
}


def _head_fits(
    state_dict: StateDict, expected: Mapping[str, torch.Tensor], head_prefixes: tuple[str, ...]
) -> bool:
    """Whether the weights hold every head tensor of the model's `expected` ones (names
    starting with `head_prefixes`), in its shape (same classes)."""
    return all(name in state_dict and state_dict[name].shape == tensor.shape
               for name, tensor in expected.items() if name.startswith(head_prefixes))


def _check_fit(
    model: nn.Module,
    expected: Mapping[str, torch.Tensor],
    state_dict: StateDict,
    weights: PretrainedWeights,
    path: PathLike,
    allow_missing_head: bool,
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and wrongly shaped tensor
    against the model's `expected` ones, and every setting that tensor shapes do not show
    (attention heads) where it differs."""
    skipped = model.head_prefixes if allow_missing_head else None
    problems = mismatches(expected, state_dict, may_miss=skipped)
    ours, theirs = model.config.to_dict(), weights.config.to_dict()
    problems += [f"  {words}: checkpoint {theirs[name]} vs model {ours[name]}"
                 for name, words in UNSEEN_SETTINGS.items()
                 if name in ours and name in theirs and ours[name] != theirs[name]]
    if problems:
        shown = ", ".join(f"{name} {ours[name]}" for name in DESCRIBED if name in ours)
        raise CheckpointError(
            f"{path} ({weights.source}) does not fit the model" + (f" ({shown})" if shown else "")
            + ":\n" + "\n".join(problems)
        )


def load_exactly(model: nn.Module, state_dict: StateDict, what: str) -> None:
    """Load `state_dict` into `model` when every tensor fits by name and shape, else raise one
    CheckpointError naming what does not (`what`: the weights, in words)."""
    problems = mismatches(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{what} do not fit the model:\n" + "\n".join(problems))
    model.load_state_dict(state_dict)


def mismatches(
    expected: Mapping[str, torch.Tensor], state_dict: StateDict,
    may_miss: tuple[str, ...] | None = None,
) -> list[str]:
    """Indented lines naming the wrongly shaped, missing and unexpected tensors of `state_dict`
    against a model's `expected` ones; names starting with a `may_miss` prefix may be missing."""
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
