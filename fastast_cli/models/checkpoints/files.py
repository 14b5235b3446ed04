"""Safe reading and writing of checkpoint files: the only module that opens one.

Reading never unpickles code: `torch.load(weights_only=True)`, or `safetensors.torch.load_file`
for safetensors files. Writing goes to a temporary file beside the target, flushed and renamed
over it, after checking that a weights-only load can read every stored value back.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from fastast_cli.atomic import atomic_path
from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.values import load_json

PathLike = str | os.PathLike[str]
StateDict = dict[str, torch.Tensor]


def check_storable(value: Any, where: str) -> None:
    """Refuse values that a weights-only `torch.load` could not read back.

    Scalars must be exactly str, int, float or bool: subclasses such as numpy.float64 pickle as
    code and would make the checkpoint unreadable.
    """
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_storable(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: use str or int")
            check_storable(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints store only JSON-like values and tensors"
    )


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """torch.save into a temporary file beside `path`, flushed to disk, then renamed over it."""
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())


def read_state_dict(path: PathLike) -> StateDict:
    """The tensors of a state-dict file (.pth/.pt or .safetensors; bare or under 'model' /
    'state_dict'), read safely. For weights of other libraries, e.g. timm ImageNet CNNs."""
    path = existing_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a weights file")
    return unwrap_state_dict(load_file(path), path)


def existing_path(path: PathLike) -> Path:
    """`path` with `~` expanded, when something is there; else, for a Hugging Face Hub id
    (`OWNER/NAME[@REV]`, `hf://...`), the downloaded checkpoint in the Hub cache (`hub`)."""
    from fastast_cli.models.checkpoints.hub import hub_checkpoint, hub_id

    local = Path(path).expanduser()
    if local.exists() and not str(path).startswith("hf:/"):
        return local
    hub = hub_id(str(path))
    if hub is not None:
        return hub_checkpoint(hub)
    raise CheckpointError(f"no such checkpoint: {local}")


def load_file(path: Path) -> Any:
    """Read a safetensors file or a torch file (weights only: no code is ever unpickled)."""
    try:
        is_safetensors = _is_safetensors(path)
    except OSError as error:
        raise CheckpointError(f"cannot read {path} ({error.strerror or error})") from error
    if is_safetensors:
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except Exception as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        detail = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} needs unsafe unpickling{detail} and is refused: only files of plain "
            "tensors, numbers and strings are read"
        ) from error
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unexpected end"
        raise CheckpointError(
            f"{path} is not a checkpoint (truncated, corrupt or another kind of file: "
            f"{type(error).__name__}: {reason})"
        ) from error


def _is_safetensors(path: Path) -> bool:
    """A `.safetensors` name, or the format's start: 8-byte header length, then '{'."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as file:
        start = file.read(9)
    if len(start) < 9 or start[8:9] != b"{":
        return False
    return int.from_bytes(start[:8], "little") < path.stat().st_size


def unwrap_state_dict(payload: Any, path: PathLike) -> StateDict:
    """The state dict in a file: the payload itself, or its 'model' / 'state_dict' entry."""
    for candidate in (payload, *_wrapped(payload)):
        if is_state_dict(candidate):
            check_finite_weights(candidate, path)
            return dict(candidate)
    raise CheckpointError(f"{path} holds no state dict of tensors (found {_describe(payload)})")


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Refuse weights holding NaN or infinity: every score the model gave would be NaN."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: damaged checkpoint ({name} holds NaN or infinite "
                                  "values)")


def _wrapped(payload: Any) -> list[Any]:
    if not isinstance(payload, Mapping):
        return []
    return [payload[key] for key in ("model", "state_dict") if key in payload]


def is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(repr(key) for key in list(value)[:5])
        return f"a dict with keys {keys}" if keys else "an empty dict"
    return f"a {type(value).__name__}"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object beside a checkpoint (config.json, an index): within the size budget, no
    key given twice, no NaN (see `fastast_cli.values.load_json`)."""
    try:
        values = load_json(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, FastASTError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return values
