"""What input a model takes, asked of the model instead of checked from its class.

Every classifier answers `model.input_spec()` with an `InputSpec`: data loading, training,
evaluation, the sweep, predict and visualize read it to decide how long the fbank of a clip is,
how many mel bins it has, whether clips keep their own length, and which statistics normalize it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InputSpec:
    """The fbank input of a model.

    target_length: frames of a fixed input (clips are padded or cut to it); for a native-length
        model, the longest clip it takes.
    num_mel_bins: mel bins per frame.
    native_length: True when the model takes a list of clips [T_i, F] of any length up to
        `target_length`, never padded (ElasticAST); False for a tensor [B, target_length, F].
    mean, std: normalization statistics stored with the model; None when it stores none.
    """

    target_length: int
    num_mel_bins: int
    native_length: bool = False
    mean: float | None = None
    std: float | None = None


def stored_stats(meta: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """Mean and std a checkpoint's meta records, (None, None) unless it records both."""
    meta = meta or {}
    if meta.get("mean") is None or meta.get("std") is None:
        return None, None
    return float(meta["mean"]), float(meta["std"])
