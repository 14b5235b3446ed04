"""Reading and writing AST weights from local files, without ever unpickling code.

Four formats are recognised and renamed to this package's parameter names (`AST.state_dict()`):

- fastast checkpoints written by `save_checkpoint`: a dict
  `{"format": "fastast", "version": 1, "config": ASTConfig.to_dict(), "model": state_dict,
  "meta": {...}}`;
- original AST checkpoints (`audioset_10_10_0.4593.pth`): a DataParallel state dict
  `module.v.*` / `module.mlp_head.*`; the architecture is read from the tensor shapes and the
  strides, which the file does not store, default to 10/10;
- Hugging Face AST folders (`config.json` + `model.safetensors` / `pytorch_model.bin`), in the
  transformers 4.x names (`encoder.layer.N.attention.attention.query`, ...) that files on disk use
  and in the transformers 5.x in-memory names (`layers.N.attention.q_proj`, ...);
- timm DeiT ImageNet weights (`deit_base_distilled_patch16_384`): the RGB patch filters are summed
  to one channel, the ImageNet heads dropped and the audio head left freshly initialised.

`torch.load` always runs with `weights_only=True`; safetensors files go through
`safetensors.torch.load_file`. Every user mistake (missing file, unreadable or unsafe file,
weights that do not fit) raises `CheckpointError` with one message.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from fastast_cli.atomic import atomic_path
from fastast_cli.data.features import AST_NORM_STATS
from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.models.ast import AST, NUM_PREFIX_TOKENS, SIZES, ASTConfig
from fastast_cli.models.pos_embed import resample_pos_embed, square_grid
from fastast_cli.models.reduction.schedule import RSchedule

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
StateDict = dict[str, torch.Tensor]

FORMAT_NAME = "fastast"
FORMAT_VERSION = 1

# What original AST and DeiT files do not store.
DEFAULT_STRIDE = 10
AST_NUM_MEL_BINS = 128
AST_LAYER_NORM_EPS = 1e-6
# The original AST's mlp_head LayerNorm is torch's default.
AST_HEAD_LAYER_NORM_EPS = 1e-5
NUM_HEADS_BY_DIM = {size["embed_dim"]: size["num_heads"] for size in SIZES.values()}
# Input lengths of the AST recipes (AudioSet, ESC-50, Speech Commands); preferred when a time
# grid fits several lengths.
COMMON_TARGET_LENGTHS = (1024, 512, 128)

HEAD_PREFIX = "mlp_head."
# Heads of timm / original checkpoints that AST does not use.
UNUSED_PREFIXES = ("head.", "head_dist.")
# Leading names of wrapped or DataParallel state dicts: `module.v.blocks.0...` → `blocks.0...`.
WRAPPER_PREFIX = re.compile(r"^(?:module\.)?(?:v\.)?")

# Hugging Face AST names (transformers 4.x, as files on disk hold them) ↔ ours: one table read
# both ways, `rename_hf_state_dict` left to right and `to_hf_state_dict` right to left. A leading
# "^" anchors a fragment at the start of a name; "N" stands for a block number. q/k/v land on
# `attn.{query,key,value}` and are fused into `attn.qkv` afterwards (and split before writing).
HF_PREFIX = "audio_spectrogram_transformer."
HF_NAME_TABLE: tuple[tuple[str, str], ...] = (
    ("^embeddings.cls_token", "^cls_token"),
    ("^embeddings.distillation_token", "^dist_token"),
    ("^embeddings.position_embeddings", "^pos_embed"),
    ("^embeddings.patch_embeddings.projection.", "^patch_embed.proj."),
    ("^encoder.layer.N.", "^blocks.N."),
    (".attention.attention.query.", ".attn.query."),
    (".attention.attention.key.", ".attn.key."),
    (".attention.attention.value.", ".attn.value."),
    (".attention.output.dense.", ".attn.proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    ("^layernorm.", "^norm."),
    ("^classifier.layernorm.", "^mlp_head.0."),
    ("^classifier.dense.", "^mlp_head.1."),
)
# transformers 5.x in-memory names → 4.x names, applied before the table.
HF5_ALIASES: tuple[tuple[str, str], ...] = (
    ("^layers.N.", "^encoder.layer.N."),
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
)


def _fragment_rule(source: str, target: str) -> tuple[re.Pattern[str], str]:
    """A regex rule rewriting the name fragment `source` into `target` (see HF_NAME_TABLE)."""
    pattern = re.escape(source.lstrip("^")).replace("N", r"(\d+)")
    return re.compile(("^" if source.startswith("^") else "") + pattern), (
        target.lstrip("^").replace("N", r"\1")
    )


HF_RENAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile("^" + re.escape(HF_PREFIX)), ""),
    *(_fragment_rule(alias, hf) for alias, hf in HF5_ALIASES),
    *(_fragment_rule(hf, ours) for hf, ours in HF_NAME_TABLE),
)
TO_HF_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    _fragment_rule(ours, hf) for hf, ours in HF_NAME_TABLE
)
BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.")
HF_SPLIT_QKV = re.compile(r"^(blocks\.\d+\.attn)\.(query|key|value)\.(weight|bias)$")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# transformers' ASTConfig defaults, for config.json files that leave a field out.
HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "patch_size": 16,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
}
HF_MODEL_TYPE = "audio-spectrogram-transformer"

# Longest list of names one mismatch error shows per kind of problem.
MAX_LISTED = 8


@dataclass
class PretrainedWeights:
    """A checkpoint read from disk and renamed to `AST.state_dict()` names.

    state_dict: the tensors (patch filters already 1-channel, unused heads dropped).
    config: the architecture the weights belong to; num_classes is 0 when there is no audio head.
    grid: the (frequency, time) patch grid that `pos_embed` [1, 2 + f·t, D] covers.
    source: what the file was, in words, for messages.
    meta: a fastast checkpoint's metadata or a Hugging Face folder's normalization; else {}.
    """

    state_dict: StateDict
    config: ASTConfig
    grid: tuple[int, int]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_head(self) -> bool:
        return f"{HEAD_PREFIX}1.weight" in self.state_dict


# --- saving ----------------------------------------------------------------------------------


def save_checkpoint(
    path: PathLike, model: nn.Module, *, state: dict[str, Any] | None = None, **meta: Any
) -> Path:
    """Write `model` (an AST or any classifier with a `config`) as a fastast checkpoint.

    `architecture` records which kind of model the config describes (`ast` or `cnn`); `meta`
    holds anything else worth keeping.

    meta: JSON-like values (str, int, float, bool, None, lists, dicts) and tensors, nested at
        will, e.g. `mean=-4.27, std=4.57, epoch=3, optimizer=opt.state_dict()`.
    state: entries stored beside `model` at the top level of the file (a training run's
        `optimizer`, `scaler`, `progress`, `averaged`), same value types as meta.
    The file is written to a temporary file in the same folder and renamed over `path`, so a
    crash never leaves a half-written checkpoint behind.
    """
    _check_storable(meta, "meta")
    _check_storable(state or {}, "state")
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
    _save_atomically(payload, path)
    return path


def _check_storable(value: Any, where: str) -> None:
    """Refuse values that a weights-only `torch.load` could not read back.

    Scalars must be exactly str, int, float or bool: subclasses such as numpy.float64 pickle as
    code and would make the checkpoint unreadable.
    """
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: use str or int")
            _check_storable(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints store only JSON-like values and tensors"
    )


def _save_atomically(payload: dict[str, Any], path: Path) -> None:
    """torch.save into a temporary file beside `path`, flushed to disk, then renamed over it."""
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())


# --- loading: public entry points ------------------------------------------------------------


def load_model(
    path: PathLike,
    r: RSchedule = 0,
    *,
    schedule: str = "constant",
    num_classes: int | None = None,
    target_length: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
    device: str | torch.device = "cpu",
    payload: Any = None,
) -> AST:
    """Build the AST a checkpoint describes, load its weights, and return it in eval mode.

    path: a fastast checkpoint, an original AST `.pth`, a Hugging Face AST folder, or timm DeiT
        ImageNet weights (`.pth` / `.safetensors`; needs `num_classes`).
    r, schedule: token merging, as in `AST.set_r`.
    num_classes: a new class count; the classification head is then freshly initialised.
    target_length, fstride, tstride: input frames and patch strides of the model; positional
        embeddings are cut or interpolated when the patch grid differs from the checkpoint's.
        Original AST files do not store their strides: for them fstride/tstride name the strides
        the checkpoint was trained with (default 10/10; `audioset_12_12_*` needs 12/12).
    payload: the file's contents when the caller has read them already (`read_file`).
    The checkpoint's metadata lands in `model.meta` and what loading did in `model.load_notes`.
    """
    weights = read_weights(path, fstride=fstride, tstride=tstride, payload=payload)
    config = _model_config(weights, path, num_classes, target_length, fstride, tstride)
    model = AST(config)
    _load_weights(model, weights, path)
    model.meta = dict(weights.meta)
    model.to(device).eval()
    return model.set_r(r, schedule)


def init_from_pretrained(
    model: AST, path: PathLike, *, fstride: int | None = None, tstride: int | None = None
) -> AST:
    """Initialise an already built `model` from a checkpoint of any supported format.

    Positional embeddings are cut or interpolated when the checkpoint's patch grid differs from
    the model's; the classification head stays as initialised when the checkpoint has none or a
    different class count. fstride/tstride: strides of an original AST checkpoint (default 10/10).
    What was adapted is logged and kept in `model.load_notes`. Returns `model`.
    """
    weights = read_weights(path, fstride=fstride, tstride=tstride)
    _load_weights(model, weights, path)
    return model


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """The raw dict of a fastast checkpoint: format, version, config, model (state dict), meta."""
    path = _existing_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a fastast checkpoint file")
    payload = _load_file(path)
    if not _is_fastast(payload):
        raise CheckpointError(
            f"{path} is not a fastast checkpoint (no 'format': 'fastast' entry); "
            "load_model and init_from_pretrained read other formats"
        )
    _check_version(payload, path)
    return payload


def read_weights(
    path: PathLike, *, fstride: int | None = None, tstride: int | None = None, payload: Any = None
) -> PretrainedWeights:
    """Read any supported checkpoint and rename its tensors to `AST.state_dict()` names.

    fstride/tstride: strides of an original AST checkpoint (default 10/10); for DeiT weights the
    strides of the model to build. Files that store their strides ignore them.
    """
    path = _existing_path(path)
    if path.is_dir():
        return _read_hf_folder(path)
    payload = _load_file(path) if payload is None else payload
    if _is_fastast(payload):
        return _fastast_weights(payload, path)
    return _state_dict_weights(_unwrap_state_dict(payload, path), path, fstride, tstride)


# --- reading files safely --------------------------------------------------------------------


def read_file(path: PathLike) -> Any:
    """The contents of a checkpoint file (a dict of tensors and plain values), read safely."""
    return _load_file(_existing_path(path))


def fastast_payload(payload: Any, path: PathLike) -> dict[str, Any] | None:
    """`payload` when it is a fastast checkpoint this version reads, else None."""
    if not _is_fastast(payload):
        return None
    _check_version(payload, Path(path))
    return payload


def read_state_dict(path: PathLike) -> StateDict:
    """The tensors of a state-dict file (.pth/.pt or .safetensors; bare or under 'model' /
    'state_dict'), read safely. For weights of other libraries, e.g. timm ImageNet CNNs."""
    path = _existing_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a weights file")
    return _unwrap_state_dict(_load_file(path), path)


def _existing_path(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    return path


def _load_file(path: Path) -> Any:
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


def _unwrap_state_dict(payload: Any, path: PathLike) -> StateDict:
    """The state dict in a file: the payload itself, or its 'model' / 'state_dict' entry."""
    for candidate in (payload, *_wrapped(payload)):
        if _is_state_dict(candidate):
            return dict(candidate)
    raise CheckpointError(f"{path} holds no state dict of tensors (found {_describe(payload)})")


def _wrapped(payload: Any) -> list[Any]:
    if not isinstance(payload, Mapping):
        return []
    return [payload[key] for key in ("model", "state_dict") if key in payload]


def _is_state_dict(value: Any) -> bool:
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error})") from error
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return values


# --- fastast checkpoints ---------------------------------------------------------------------


def _is_fastast(payload: Any) -> bool:
    return isinstance(payload, Mapping) and payload.get("format") == FORMAT_NAME


def _check_version(payload: Mapping[str, Any], path: Path) -> None:
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a fastast checkpoint of version {version!r}; this fastast reads "
            f"version {FORMAT_VERSION} (a newer fastast wrote it?)"
        )


def _fastast_weights(payload: Mapping[str, Any], path: Path) -> PretrainedWeights:
    _check_version(payload, path)
    architecture = payload.get("architecture", "ast")
    if architecture != "ast":
        raise CheckpointError(
            f"{path} holds a {architecture} model, not an AST (load it with load_classifier)"
        )
    state_dict, config = payload.get("model"), payload.get("config")
    if not _is_state_dict(state_dict) or not isinstance(config, Mapping):
        raise CheckpointError(f"{path} is a damaged fastast checkpoint (no model or config)")
    try:
        config = ASTConfig.from_dict(dict(config))
    except TypeError as error:
        raise CheckpointError(f"{path} has an unreadable model config ({error})") from error
    meta = payload.get("meta") or {}
    return PretrainedWeights(dict(state_dict), config, config.grid, "fastast checkpoint", meta)


# --- original AST and timm DeiT state dicts --------------------------------------------------


def _state_dict_weights(
    state_dict: StateDict, path: Path, fstride: int | None, tstride: int | None
) -> PretrainedWeights:
    """An original AST or timm DeiT state dict, told apart by the patch filters' channels."""
    if any(_is_hf_name(name) for name in state_dict):
        raise CheckpointError(
            f"{path} holds Hugging Face AST weights: pass the folder that holds them together "
            "with their config.json"
        )
    state_dict = _strip_wrapper_prefixes(state_dict)
    filters = _required(state_dict, "patch_embed.proj.weight", path)
    _required(state_dict, "cls_token", path)
    if filters.ndim == 4 and filters.shape[1] == 3:
        return _deit_weights(state_dict, path, fstride, tstride)
    return _original_ast_weights(state_dict, path, fstride, tstride)


def _is_hf_name(name: str) -> bool:
    return name.startswith(("audio_spectrogram_transformer.", "embeddings."))


def _strip_wrapper_prefixes(state_dict: StateDict) -> StateDict:
    """`module.v.blocks.0.*` → `blocks.0.*`, `module.mlp_head.*` → `mlp_head.*`; unused heads go."""
    renamed = {WRAPPER_PREFIX.sub("", name, count=1): tensor for name, tensor in state_dict.items()}
    return {name: t for name, t in renamed.items() if not name.startswith(UNUSED_PREFIXES)}


def _required(state_dict: StateDict, name: str, path: Path) -> torch.Tensor:
    if name not in state_dict:
        listed = ", ".join(list(state_dict)[:5])
        raise CheckpointError(
            f"{path} is not an AST or DeiT checkpoint: it has no {name} (its keys start with "
            f"{listed})"
        )
    return state_dict[name]


def _architecture(state_dict: StateDict, path: Path) -> dict[str, Any]:
    """ASTConfig fields that the tensor shapes of a ViT state dict determine."""
    embed_dim = _required(state_dict, "cls_token", path).shape[-1]
    if embed_dim not in NUM_HEADS_BY_DIM:
        known = ", ".join(str(dim) for dim in NUM_HEADS_BY_DIM)
        raise CheckpointError(
            f"{path} has embedding size {embed_dim}; the head count is known only for {known}"
        )
    block_ids = {int(match.group(1)) for match in map(BLOCK_NAME.match, state_dict) if match}
    hidden = _required(state_dict, "blocks.0.mlp.fc1.weight", path).shape[0]
    return {
        "embed_dim": embed_dim,
        "depth": len(block_ids),
        "num_heads": NUM_HEADS_BY_DIM[embed_dim],
        "mlp_ratio": hidden / embed_dim,
        "patch_size": state_dict["patch_embed.proj.weight"].shape[-1],
        "qkv_bias": "blocks.0.attn.qkv.bias" in state_dict,
        "layer_norm_eps": AST_LAYER_NORM_EPS,
    }


def _num_classes(state_dict: StateDict) -> int:
    head = state_dict.get(f"{HEAD_PREFIX}1.weight")
    return 0 if head is None else head.shape[0]


def _num_patches(state_dict: StateDict, path: Path) -> int:
    return _required(state_dict, "pos_embed", path).shape[1] - NUM_PREFIX_TOKENS


def _original_ast_weights(
    state_dict: StateDict, path: Path, fstride: int | None, tstride: int | None
) -> PretrainedWeights:
    """Original AST: 128 mel bins; the strides (given, else 10/10) and pos_embed give the grid."""
    architecture = _architecture(state_dict, path)
    fstride, tstride = fstride or DEFAULT_STRIDE, tstride or DEFAULT_STRIDE
    patch_size = architecture["patch_size"]
    f_dim = (AST_NUM_MEL_BINS - patch_size) // fstride + 1
    num_patches = _num_patches(state_dict, path)
    if num_patches % f_dim:
        raise CheckpointError(
            f"{path} has {num_patches} patch positions, which do not split into {f_dim} "
            f"frequency rows (fstride {fstride}): pass the strides it was trained with "
            "(the file name tells: audioset_12_12_* → fstride=12, tstride=12)"
        )
    t_dim = num_patches // f_dim
    config = ASTConfig(
        num_classes=_num_classes(state_dict),
        fstride=fstride,
        tstride=tstride,
        num_mel_bins=AST_NUM_MEL_BINS,
        target_length=_target_length(t_dim, patch_size, tstride),
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


def _target_length(t_dim: int, patch_size: int, tstride: int) -> int:
    """An input length with `t_dim` time patches: a recipe length if one fits, else the shortest."""
    shortest = (t_dim - 1) * tstride + patch_size
    fitting = [n for n in COMMON_TARGET_LENGTHS if shortest <= n < shortest + tstride]
    return fitting[0] if fitting else shortest


def _deit_weights(
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
        grid = square_grid(_num_patches(state_dict, path))
    except ValueError as error:
        raise CheckpointError(f"{path}: DeiT pos_embed is not square ({error})") from error
    config = ASTConfig(
        num_classes=0,
        fstride=fstride or DEFAULT_STRIDE,
        tstride=tstride or DEFAULT_STRIDE,
        **_architecture(state_dict, path),
    )
    return PretrainedWeights(state_dict, config, grid, "timm DeiT ImageNet weights")


# --- Hugging Face AST folders ----------------------------------------------------------------


def _read_hf_folder(folder: Path) -> PretrainedWeights:
    """A folder written by `save_pretrained`: config.json plus safetensors or bin weights."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{folder} is a folder without config.json: pass a checkpoint file, or a Hugging "
            "Face AST folder as save_pretrained writes it"
        )
    hf_config = {**HF_DEFAULTS, **_read_json(config_file)}
    model_type = hf_config.get("model_type", HF_MODEL_TYPE)
    if model_type != HF_MODEL_TYPE:
        raise CheckpointError(f"{config_file} describes a {model_type!r} model, not an AST")
    state_dict = rename_hf_state_dict(_read_hf_tensors(folder))
    config = _config_from_hf(hf_config, state_dict, config_file)
    meta = _hf_normalization(folder)
    return PretrainedWeights(state_dict, config, config.grid, "Hugging Face AST folder", meta)


def _read_hf_tensors(folder: Path) -> StateDict:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return _unwrap_state_dict(_load_file(folder / name), folder / name)
    for name in HF_INDEX_FILES:
        if (folder / name).is_file():
            return _read_hf_shards(folder, folder / name)
    raise CheckpointError(f"{folder} has config.json but no {' or '.join(HF_WEIGHT_FILES)}")


def _read_hf_shards(folder: Path, index_file: Path) -> StateDict:
    """Weights split over several files listed by a `*.index.json` weight map."""
    weight_map = _read_json(index_file).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
    state_dict: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(_unwrap_state_dict(_load_file(folder / shard), folder / shard))
    return state_dict


def rename_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face AST names (transformers 4.x files or 5.x modules) → `AST.state_dict()` names.

    Separate query/key/value projections [D, D] / [D] are fused into `attn.qkv` [3D, D] / [3D]
    (rows q, k, v).
    """
    renamed = {_rename_hf(name): tensor for name, tensor in state_dict.items()}
    return _fuse_qkv(renamed)


def _rename_hf(name: str) -> str:
    for pattern, replacement in HF_RENAME_RULES:
        name = pattern.sub(replacement, name)
    return name


def to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """`AST.state_dict()` names → Hugging Face AST names (transformers 4.x files), the inverse
    of `rename_hf_state_dict`: `attn.qkv` [3D, D] / [3D] is split into query, key and value."""
    renamed: StateDict = {}
    for name, tensor in _split_qkv(state_dict).items():
        for pattern, replacement in TO_HF_RULES:
            name = pattern.sub(replacement, name)
        renamed[name if name.startswith("classifier.") else HF_PREFIX + name] = tensor
    return renamed


def _split_qkv(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """`blocks.N.attn.qkv.*` → `blocks.N.attn.{query,key,value}.*` (rows q, k, v)."""
    split: StateDict = {}
    for name, tensor in state_dict.items():
        if ".attn.qkv." not in name:
            split[name] = tensor
            continue
        for role, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
            split[name.replace(".qkv.", f".{role}.")] = part.contiguous()
    return split


def _fuse_qkv(state_dict: StateDict) -> StateDict:
    """`blocks.N.attn.{query,key,value}.{weight,bias}` → `blocks.N.attn.qkv.*`, rows q, k, v."""
    fused: StateDict = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        match = HF_SPLIT_QKV.match(name)
        if match is None:
            fused[name] = tensor
            continue
        prefix, role, kind = match.groups()
        parts.setdefault(f"{prefix}.qkv.{kind}", {})[role] = tensor
    for name, roles in parts.items():
        if len(roles) == 3:
            fused[name] = torch.cat([roles["query"], roles["key"], roles["value"]], dim=0)
        else:  # incomplete: leave the pieces, the mismatch check names them
            fused.update({name.replace(".qkv.", f".{role}."): t for role, t in roles.items()})
    return fused


def _config_from_hf(
    hf_config: dict[str, Any], state_dict: StateDict, config_file: Path
) -> ASTConfig:
    """ASTConfig from a Hugging Face config.json (with transformers' defaults filled in)."""
    if hf_config["hidden_act"] != "gelu":
        raise CheckpointError(
            f"{config_file} uses hidden_act {hf_config['hidden_act']!r}; AST uses exact 'gelu'"
        )
    embed_dim = hf_config["hidden_size"]
    num_classes = _num_classes(state_dict)
    return ASTConfig(
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        mlp_ratio=hf_config["intermediate_size"] / embed_dim,
        patch_size=hf_config["patch_size"],
        fstride=hf_config["frequency_stride"],
        tstride=hf_config["time_stride"],
        num_mel_bins=hf_config["num_mel_bins"],
        target_length=hf_config["max_length"],
        layer_norm_eps=hf_config["layer_norm_eps"],
        qkv_bias=hf_config["qkv_bias"],
        labels=_hf_labels(hf_config.get("id2label"), num_classes),
    )


def _hf_labels(id2label: Any, num_classes: int) -> list[str]:
    """Label names ordered by class id; [] when they do not cover exactly the classes."""
    if not isinstance(id2label, dict) or len(id2label) != num_classes:
        return []
    try:
        by_id = {int(key): str(name) for key, name in id2label.items()}
    except ValueError:
        return []
    return [by_id[i] for i in range(num_classes)] if set(by_id) == set(range(num_classes)) else []


def _hf_normalization(folder: Path) -> dict[str, Any]:
    """Feature normalization of `preprocessor_config.json` (mean, std), when the folder has one."""
    preprocessor_file = folder / "preprocessor_config.json"
    if not preprocessor_file.is_file():
        return {}
    values = _read_json(preprocessor_file)
    return {key: values[key] for key in ("mean", "std") if key in values}


# --- fitting weights into a model ------------------------------------------------------------


def _model_config(
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
    return config


def _load_weights(model: AST, weights: PretrainedWeights, path: PathLike) -> None:
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
            f"classes (checkpoint: {_num_classes(weights.state_dict) or 'no audio head'})"
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
    return _num_classes(state_dict) == model.config.num_classes


def _check_fit(
    model: AST,
    state_dict: StateDict,
    weights: PretrainedWeights,
    path: PathLike,
    allow_missing_head: bool,
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and wrongly shaped tensor."""
    expected = model.state_dict()
    missing = [
        name
        for name in expected
        if name not in state_dict and not (allow_missing_head and name.startswith(HEAD_PREFIX))
    ]
    unexpected = [name for name in state_dict if name not in expected]
    wrong_shape = [
        f"{name}: checkpoint {list(tensor.shape)} vs model {list(expected[name].shape)}"
        for name, tensor in state_dict.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    problems = _listing("wrongly shaped", wrong_shape) + _listing("missing", missing)
    problems += _listing("unexpected", unexpected)
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


def _listing(kind: str, names: list[str]) -> list[str]:
    """Indented lines for one kind of problem, at most MAX_LISTED names and a count of the rest."""
    if not names:
        return []
    lines = [f"  {kind} ({len(names)}):"] + [f"    {name}" for name in names[:MAX_LISTED]]
    if len(names) > MAX_LISTED:
        lines.append(f"    ... and {len(names) - MAX_LISTED} more")
    return lines
