"""PaSST weights (Koutini et al. 2022): a local state-dict file such as the AudioSet release
`passt-s-f128-p16-s10-ap.476-swa.pt`, read safely into the shared weights record, its tensors in
`PaSSTClassifier.state_dict()` names. Fitting them into a teacher (the time positional table cut
or interpolated, the head re-created) is `fitting.fit_weights`, as for every AST format.

PaSST's positional embeddings are factorized: `freq_new_pos_embed` [1, D, f, 1] and
`time_new_pos_embed` [1, D, 1, t] give the (f, t) patch grid of the file."""

from __future__ import annotations

import torch

from fastast_cli.errors import CheckpointError
from fastast_cli.models.checkpoints.files import PathLike, StateDict, read_state_dict
from fastast_cli.models.checkpoints.weights import DEFAULT_STRIDE, PretrainedWeights, input_length
from fastast_cli.models.passt import PATCH_SIZE, PaSSTConfig

# Input sizes of PaSST's releases, preferred when a table fits several: mel bins, frames.
COMMON_MEL_BINS = (128,)
COMMON_TARGET_LENGTHS = (998, 1000, 1024)

FREQUENCY_TABLE = "net.freq_new_pos_embed"
TIME_TABLE = "net.time_new_pos_embed"
HEAD_WEIGHT = "net.head.1.weight"


def read_passt_weights(path: PathLike) -> PretrainedWeights:
    """The PaSST state dict at `path` (PaSST's names, or a wrapper's `net.` names).

    The file stores no input shape: its config holds PaSST-S's strides (10/10) and the input
    sizes its positional tables cover; num_classes is its head's class count (0: no head).
    """
    state_dict = named_as_classifier(read_state_dict(path))
    frequencies = _table(state_dict, FREQUENCY_TABLE, path).shape[2]  # [1, D, f, 1]
    columns = _table(state_dict, TIME_TABLE, path).shape[3]  # [1, D, 1, t]
    head = state_dict.get(HEAD_WEIGHT)
    config = PaSSTConfig(
        num_classes=0 if head is None else head.shape[0],
        target_length=input_length(columns, PATCH_SIZE, DEFAULT_STRIDE, COMMON_TARGET_LENGTHS),
        num_mel_bins=input_length(frequencies, PATCH_SIZE, DEFAULT_STRIDE, COMMON_MEL_BINS),
    )
    return PretrainedWeights(state_dict, config, (frequencies, columns), "PaSST state dict")


def named_as_classifier(state_dict: StateDict) -> StateDict:
    """PaSST's own names (`blocks.0...`) or a wrapper's (`net.blocks.0...`) → `net.blocks.0...`."""
    return {f"net.{name.removeprefix('net.')}": tensor for name, tensor in state_dict.items()}


def _table(state_dict: StateDict, name: str, path: PathLike) -> torch.Tensor:
    if name not in state_dict or state_dict[name].ndim != 4:
        listed = ", ".join(list(state_dict)[:5])
        raise CheckpointError(
            f"{path} is not a PaSST state dict: it has no {name.removeprefix('net.')} "
            f"[1, D, f, t] table (its keys start with {listed})"
        )
    return state_dict[name]
