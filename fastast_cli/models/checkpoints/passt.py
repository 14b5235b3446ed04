"""PaSST weights (Koutini et al. 2022): a local state-dict file such as the AudioSet release
`passt-s-f128-p16-s10-ap.476-swa.pt`, read safely and fitted into a `PaSSTClassifier`: the time
positional table [1, D, 1, t] cut or interpolated to the model's length, the head re-created
when the class count differs. PaSST keeps its own tensor names (no AST weights record)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints.files import PathLike, StateDict, read_state_dict
from fastast_cli.models.passt import HEAD_PREFIX, PaSSTClassifier


def read_passt_weights(path: PathLike) -> StateDict:
    """The tensors of a PaSST state-dict file, in `PaSSTClassifier.net` names (`net.` dropped)."""
    return {name.removeprefix("net."): tensor for name, tensor in read_state_dict(path).items()}


def fit_time_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """PaSST's time positional table [1, D, 1, t] cut (from the start, as PaSST does at run
    time) or linearly interpolated to `length` columns."""
    if table.shape[-1] >= length:
        return table[..., :length]
    return F.interpolate(table, size=(1, length), mode="bilinear", align_corners=False)


def load_passt_weights(model: PaSSTClassifier, state_dict: StateDict) -> list[str]:
    """Load PaSST weights (`read_passt_weights` names) into `model.net`, adapting the time
    table and the head; returns notes on what changed."""
    state_dict = dict(state_dict)
    expected = model.net.state_dict()
    notes = []
    table = state_dict.get("time_new_pos_embed")
    if table is not None and table.shape != expected["time_new_pos_embed"].shape:
        state_dict["time_new_pos_embed"] = fit_time_table(
            table, expected["time_new_pos_embed"].shape[-1]
        )
        notes.append(f"time positions adapted from {table.shape[-1]} columns")
    heads = [k for k in state_dict if k.startswith((HEAD_PREFIX, "head_dist."))]
    if any(state_dict[k].shape != expected[k].shape for k in heads if k in expected):
        for key in heads:
            state_dict.pop(key)
        notes.append("classification head re-created for the new classes")
    try:
        missing, unexpected = model.net.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # a shape that cannot be adapted (other mel bins, strides)
        raise FastASTError(f"PaSST weights do not fit this model: {error}") from None
    missing = [k for k in missing if not k.startswith((HEAD_PREFIX, "head_dist."))]
    if missing or unexpected:
        raise FastASTError(
            f"PaSST weights do not fit: {len(missing)} missing, {len(unexpected)} unexpected keys "
            f"(e.g. {', '.join((missing + unexpected)[:3])})"
        )
    return notes
