"""Loading models from checkpoints. Which loader to use:

- `load_checkpoint(path)`: the classifier a file holds, any architecture, as stored (no token
  merging). The one place a file becomes a model; the others build on it or on `read_weights`.
- `models.classifiers.load_classifier(path, r=...)`: any trained classifier ready to run,
  merging as its checkpoint records (what `evaluate`, `predict` and `sweep` load).
- `load_model(path, r=...)`: an AST only (the public Python API's loader), merging as recorded,
  from any AST format, optionally re-shaped (`target_length`, strides) or with a new head
  (`num_classes`). Other architectures are refused with a pointer to `load_classifier`.
- `init_from_pretrained(model, path)`: AST weights of any format into an AST already built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastast_cli.errors import CheckpointError
from fastast_cli.models.ast import AST
from fastast_cli.models.checkpoints.deit import deit_weights
from fastast_cli.models.checkpoints.fastast import (
    check_version,
    fastast_weights,
    is_fastast,
    recorded_parts,
)
from fastast_cli.models.checkpoints.files import (
    PathLike,
    StateDict,
    existing_path,
    load_file,
    unwrap_state_dict,
)
from fastast_cli.models.checkpoints.fitting import fit_weights, load_exactly, model_config
from fastast_cli.models.checkpoints.huggingface import is_hf_name, read_hf_folder
from fastast_cli.models.checkpoints.original import original_ast_weights, strip_wrapper_prefixes
from fastast_cli.models.checkpoints.passt import TIME_TABLE
from fastast_cli.models.checkpoints.weights import PretrainedWeights, required
from fastast_cli.models.elastic import ElasticAST, ElasticConfig
from fastast_cli.models.passt import PaSSTClassifier, PaSSTConfig
from fastast_cli.models.records import ConfigRecord
from fastast_cli.models.reduction.schedule import RSchedule
from fastast_cli.models.reduction.settings import MergeSettings
from fastast_cli.models.teachers import CNNClassifier, CNNConfig

# Rebuilds the model of a fastast checkpoint's contents; the path is for messages.
Builder = Callable[[Mapping[str, Any], Path], nn.Module]

# --- any trained classifier ------------------------------------------------------------------


def load_checkpoint(path: PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The classifier a checkpoint holds (AST, ElasticAST, CNN or PaSST), in eval mode, as
    stored: token merging is left off whatever the checkpoint records. Reads the file once.

    path: a fastast checkpoint of any architecture (`ast`, `elastic`, `cnn`, `passt`; a run's
        `best.pt` or `last.pt`, old or new layout), an original AST `.pth` or a Hugging Face AST
        folder. The checkpoint's metadata lands in `model.meta`. To run a checkpoint as trained
        use `load_classifier` (merging as recorded) or, for an AST, `load_model`.
    """
    path = existing_path(path)
    if path.is_dir():
        model = ast_from_weights(read_hf_folder(path), path)
    else:
        contents = load_file(path)
        if is_fastast(contents):
            check_version(contents, path)
            model = _builder(contents, path)(contents, path)
        else:
            model = ast_from_weights(weights_of(contents, path), path)
    return model.to(device).eval()


def _builder(payload: Mapping[str, Any], path: Path) -> Builder:
    """How to rebuild the architecture a fastast checkpoint records (`ast` when it records none:
    the first fastast files)."""
    architecture = payload.get("architecture", "ast")
    builder = BUILDERS.get(architecture) if isinstance(architecture, str) else None
    if builder is None:
        raise CheckpointError(f"{path} holds an unknown kind of model ({architecture!r})")
    return builder


def _recorded_ast(payload: Mapping[str, Any], path: Path) -> nn.Module:
    return ast_from_weights(fastast_weights(payload, path), path)


def _recorded_model(model_class: type[nn.Module], config_class: type[ConfigRecord]) -> Builder:
    """A builder for a classifier that rebuilds from its config alone (ElasticAST, CNN, PaSST)."""

    def build(payload: Mapping[str, Any], path: Path) -> nn.Module:
        config, state_dict, meta = recorded_parts(payload, path)
        try:
            model = model_class(config_class.from_dict(config))
        except (TypeError, ValueError, ArithmeticError, RuntimeError) as error:  # bad values
            raise CheckpointError(f"{path} has an unusable model config ({error})") from None
        load_exactly(model, state_dict, f"{path}: the weights of this {payload['architecture']}")
        model.meta = meta
        return model

    return build


# The architecture tag a checkpoint records → how to rebuild its model.
BUILDERS: dict[str, Builder] = {
    AST.architecture: _recorded_ast,
    ElasticAST.architecture: _recorded_model(ElasticAST, ElasticConfig),
    CNNClassifier.architecture: _recorded_model(CNNClassifier, CNNConfig),
    PaSSTClassifier.architecture: _recorded_model(PaSSTClassifier, PaSSTConfig),
}

# --- AST weights of any format ---------------------------------------------------------------


def load_model(
    path: PathLike,
    r: RSchedule | None = None,
    *,
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    method: str | None = None,
    num_classes: int | None = None,
    target_length: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
    device: str | torch.device = "cpu",
) -> AST:
    """The AST a checkpoint describes, its weights loaded, in eval mode, merging as the
    checkpoint records: the Python API's loader (`fastast_cli.load_model`).

    Returns an `AST` only. A fastast checkpoint of another architecture (ElasticAST, CNN,
    PaSST) raises `CheckpointError` naming `load_classifier`, which loads any of them merging
    as recorded (and `load_checkpoint` as stored); those take no re-shaping arguments.

    path: a fastast checkpoint, an original AST `.pth`, a Hugging Face AST folder (or a Hub
        id, see `hub`), or timm DeiT ImageNet weights (`.pth` / `.safetensors`; needs
        `num_classes`).
    r, schedule, proportional_attention, method: token merging, as in `AST.set_r`. The model
        merges as its checkpoint records (`MergeSettings`: a run trained at r = 8 runs at
        r = 8, proportional attention as trained), exactly as the command line runs it; each
        argument given overrides its part. Files that record nothing load without merging.
    num_classes: a new class count; the classification head is then freshly initialised.
    target_length, fstride, tstride: input frames and patch strides of the model; positional
        embeddings are cut or interpolated when the patch grid differs from the checkpoint's.
        Original AST files do not store their strides: for them fstride/tstride name the strides
        the checkpoint was trained with (default 10/10; `audioset_12_12_*` needs 12/12).
    The checkpoint's metadata lands in `model.meta`, what loading did in `model.load_notes`,
    and the merging used in `model.merging`.
    """
    weights = read_weights(path, fstride=fstride, tstride=tstride)
    model = ast_from_weights(weights, path, num_classes=num_classes, target_length=target_length,
                             fstride=fstride, tstride=tstride)
    model.to(device).eval()
    settings = MergeSettings.from_meta(model.meta).overridden(
        r, schedule, proportional_attention, method)
    try:
        return settings.apply(model)
    except (ValueError, TypeError) as error:  # a damaged record, an unknown method
        raise CheckpointError(f"{path}: token merging settings {settings.to_meta()} do not "
                              f"apply ({error})") from None


def ast_from_weights(
    weights: PretrainedWeights,
    path: PathLike,
    *,
    num_classes: int | None = None,
    target_length: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
) -> AST:
    """A new AST of the weights' config (with the given input shape and class count), fitted."""
    config = model_config(weights, path, num_classes, target_length, fstride, tstride)
    try:
        model = AST(config)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as error:
        raise CheckpointError(f"{path} has an unusable model config ({error})") from None
    fit_weights(model, weights, path)
    model.meta = dict(weights.meta)
    return model


def init_from_pretrained(
    model: AST, path: PathLike, *, fstride: int | None = None, tstride: int | None = None
) -> AST:
    """Initialise an already built `model` from a checkpoint of any supported format.

    Positional embeddings are cut or interpolated when the checkpoint's patch grid differs from
    the model's; the classification head stays as initialised when the checkpoint has none or a
    different class count. fstride/tstride: strides of an original AST checkpoint (default 10/10).
    What was adapted is logged and kept in `model.load_notes`. Returns `model`.
    """
    fit_weights(model, read_weights(path, fstride=fstride, tstride=tstride), path)
    return model


def read_weights(
    path: PathLike, *, fstride: int | None = None, tstride: int | None = None
) -> PretrainedWeights:
    """Read any supported AST checkpoint and rename its tensors to `AST.state_dict()` names.

    fstride/tstride: strides of an original AST checkpoint (default 10/10); for DeiT weights the
    strides of the model to build. Files that store their strides ignore them.
    """
    path = existing_path(path)
    if path.is_dir():
        return read_hf_folder(path)
    return weights_of(load_file(path), path, fstride, tstride)


def weights_of(
    contents: Any, path: Path, fstride: int | None = None, tstride: int | None = None
) -> PretrainedWeights:
    """The weights record of a file's contents: a fastast AST checkpoint, or an original AST or
    timm DeiT state dict (told apart by the patch filters' channels)."""
    if is_fastast(contents):
        return fastast_weights(contents, path)
    return state_dict_weights(unwrap_state_dict(contents, path), path, fstride, tstride)


def state_dict_weights(
    state_dict: StateDict, path: Path, fstride: int | None, tstride: int | None
) -> PretrainedWeights:
    """An original AST or timm DeiT state dict, told apart by the patch filters' channels."""
    if any(is_hf_name(name) for name in state_dict):
        raise CheckpointError(
            f"{path} holds Hugging Face AST weights: pass the folder that holds them together "
            "with their config.json"
        )
    if any(name.endswith(TIME_TABLE.removeprefix("net.")) for name in state_dict):
        raise CheckpointError(
            f"{path} holds PaSST weights: they initialise a PaSST teacher (model passt with "
            "these as its pretrained weights), not an AST"
        )
    state_dict = strip_wrapper_prefixes(state_dict)
    filters = required(state_dict, "patch_embed.proj.weight", path)
    required(state_dict, "cls_token", path)
    if filters.ndim == 4 and filters.shape[1] == 3:
        return deit_weights(state_dict, path, fstride, tstride)
    return original_ast_weights(state_dict, path, fstride, tstride)
