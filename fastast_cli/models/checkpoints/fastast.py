"""fastast's own checkpoint format: one dict per file, written by `save_checkpoint`.

`{"format": "fastast", "version": 1, "architecture": "ast" | "elastic" | "cnn" | "passt",
"config": Config.to_dict(), "model": state_dict, "meta": {...}}`. A training run's `last.pt`
may hold more top-level keys (optimizer, scaler, progress, averaged); files written before they
moved there keep them inside `meta`. Readers take what they need and ignore the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fastast_cli.data.features import MAX_TARGET_LENGTH
from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.models.ast import ASTConfig
from fastast_cli.models.checkpoints.files import (
    PathLike,
    check_finite_weights,
    check_storable,
    existing_path,
    is_state_dict,
    load_file,
    save_atomically,
)
from fastast_cli.models.checkpoints.weights import PretrainedWeights
from fastast_cli.values import number, shown

FORMAT_NAME = "fastast"
FORMAT_VERSION = 1


def save_checkpoint(
    path: PathLike, model: nn.Module, *, state: dict[str, Any] | None = None, **meta: Any
) -> Path:
    """Write `model` (any classifier with a `config` and an `architecture` tag) as a fastast
    checkpoint.

    `architecture` records which kind of model the config describes (`ast`, `elastic`, `cnn`,
    `passt`); `meta` holds anything else worth keeping about the model.

    meta: JSON-like values (str, int, float, bool, None, lists, dicts) and tensors, nested at
        will, e.g. `mean=-4.27, std=4.57, epoch=3, labels=[...]`.
    state: entries stored beside `model` at the top level of the file (a training run's
        `optimizer`, `scaler`, `progress`, `averaged`), same value types as meta.
    The file is written to a temporary file in the same folder and renamed over `path`, so a
    crash never leaves a half-written checkpoint behind.
    """
    check_storable(meta, "meta")
    check_storable(state or {}, "state")
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "architecture": getattr(model, "architecture", "ast"),
        "config": model.config.to_dict(),
        "model": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "meta": meta,
    }
    if payload.keys() & (state or {}).keys():
        raise ValueError(f"state cannot replace the checkpoint's own {sorted(payload)} keys")
    payload.update(state or {})
    path = Path(path).expanduser()
    save_atomically(payload, path)
    return path


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """The raw dict of a fastast checkpoint: format, version, config, model (state dict), meta."""
    path = existing_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a fastast checkpoint file")
    payload = load_file(path)
    if not is_fastast(payload):
        raise CheckpointError(
            f"{path} is not a fastast checkpoint (no 'format': 'fastast' entry); "
            "load_model and init_from_pretrained read other formats"
        )
    check_version(payload, path)
    return payload


def is_fastast(payload: Any) -> bool:
    return isinstance(payload, Mapping) and payload.get("format") == FORMAT_NAME


def check_version(payload: Mapping[str, Any], path: Path) -> None:
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a fastast checkpoint of version {version!r}; this fastast reads "
            f"version {FORMAT_VERSION} (a newer fastast wrote it?)"
        )


def recorded_parts(
    payload: Mapping[str, Any], path: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The (config, state dict, meta) a fastast checkpoint records about its model; extra
    top-level entries (a run's resume state) are not part of it."""
    state_dict, config = payload.get("model"), payload.get("config")
    if not is_state_dict(state_dict) or not isinstance(config, Mapping):
        raise CheckpointError(f"{path} is a damaged fastast checkpoint (no model or config)")
    meta = payload.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path} is a damaged fastast checkpoint (meta is not a dict)")
    check_meta(meta, path)
    check_finite_weights(state_dict, path)
    return dict(config), dict(state_dict), dict(meta)


# What the numbers a checkpoint's meta records must be: (integer, lowest, highest, above).
META_NUMBERS: dict[str, tuple[bool, float | None, float | None, float | None]] = {
    "mean": (False, -1e4, 1e4, None), "std": (False, None, 1e4, 0.0),
    "target_length": (True, 1, MAX_TARGET_LENGTH, None), "num_mel_bins": (True, 1, 1024, None),
    "fold": (True, 1, None, None), "epoch": (True, 0, None, None), "r": (True, 0, None, None),
    "averaged_epochs": (True, 0, None, None),
}
META_TEXTS = ("data_identity", "loss", "metric", "dataset", "schedule", "stats_note")


def check_meta(meta: Mapping[str, Any], path: PathLike) -> None:
    """Refuse meta whose numbers (mean, std, lengths, fold, epoch, r) are not finite numbers in
    range, or whose names are not text: they decide how inputs are normalized and which clips
    a model is scored on."""
    for key, (integer, low, high, above) in META_NUMBERS.items():
        if meta.get(key) is not None:
            try:
                number(meta[key], f"meta {key}", low=low, high=high, above=above,
                       integer=integer)
            except FastASTError as error:
                raise CheckpointError(f"{path}: damaged checkpoint ({error})") from None
    for key in META_TEXTS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise CheckpointError(f"{path}: damaged checkpoint (meta {key} must be text, got "
                                  f"{shown(meta[key])})")


def fastast_weights(payload: Mapping[str, Any], path: Path) -> PretrainedWeights:
    """The weights record of a fastast AST checkpoint."""
    check_version(payload, path)
    architecture = payload.get("architecture", "ast")
    if architecture != "ast":
        raise CheckpointError(
            f"{path} holds a model of kind {architecture!r}, not an AST: its weights do not "
            "make or initialise an AST (evaluate, predict and load_classifier read it as it is)"
        )
    config, state_dict, meta = recorded_parts(payload, path)
    try:
        ast_config = ASTConfig.from_dict(config)
        grid = ast_config.grid
    except (TypeError, ValueError, ArithmeticError) as error:
        raise CheckpointError(f"{path} has an unreadable model config ({error})") from None
    return PretrainedWeights(state_dict, ast_config, grid, "fastast checkpoint", meta)
