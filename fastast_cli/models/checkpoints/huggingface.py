"""Hugging Face AST folders (`config.json` + `model.safetensors` / `pytorch_model.bin`), in the
transformers 4.x names (`encoder.layer.N.attention.attention.query`, ...) that files on disk use
and in the transformers 5.x in-memory names (`layers.N.attention.q_proj`, ...); and the way back
(`to_hf_state_dict`) for export."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastast_cli.errors import CheckpointError
from fastast_cli.models.ast import ASTConfig
from fastast_cli.models.checkpoints.fastast import check_meta
from fastast_cli.models.checkpoints.files import StateDict, load_file, read_json, unwrap_state_dict
from fastast_cli.models.checkpoints.weights import PretrainedWeights, num_classes_of

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

STORED_BLOCK = re.compile(r"^blocks\.(\d+)\.")  # a transformer layer's tensors, renamed
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
# transformers' `problem_type` ↔ fastast's training loss (which picks softmax or sigmoid scores).
HF_PROBLEM_TYPES = {"ce": "single_label_classification", "bce": "multi_label_classification"}


def read_hf_folder(folder: Path) -> PretrainedWeights:
    """A folder written by `save_pretrained`: config.json plus safetensors or bin weights."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{folder} is a folder without config.json: pass a checkpoint file, or a Hugging "
            "Face AST folder as save_pretrained writes it"
        )
    hf_config = {**HF_DEFAULTS, **read_json(config_file)}
    model_type = hf_config.get("model_type", HF_MODEL_TYPE)
    if model_type != HF_MODEL_TYPE:
        raise CheckpointError(f"{config_file} describes a {model_type!r} model, not an AST")
    state_dict = rename_hf_state_dict(_read_hf_tensors(folder))
    config = _config_from_hf(hf_config, state_dict, config_file)
    meta = {**_hf_normalization(folder), **_hf_loss(hf_config)}
    check_meta(meta, folder / "preprocessor_config.json")
    return PretrainedWeights(state_dict, config, config.grid, "Hugging Face AST folder", meta)


def _read_hf_tensors(folder: Path) -> StateDict:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return unwrap_state_dict(load_file(folder / name), folder / name)
    for name in HF_INDEX_FILES:
        if (folder / name).is_file():
            return _read_hf_shards(folder, folder / name)
    raise CheckpointError(f"{folder} has config.json but no {' or '.join(HF_WEIGHT_FILES)}")


def _read_hf_shards(folder: Path, index_file: Path) -> StateDict:
    """Weights split over several files listed by a `*.index.json` weight map."""
    weight_map = read_json(index_file).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
    state_dict: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(unwrap_state_dict(load_file(folder / shard), folder / shard))
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
    num_classes = num_classes_of(state_dict)
    depth = hf_config["num_hidden_layers"]
    stored = {int(match.group(1)) for name in state_dict
              if (match := STORED_BLOCK.match(name)) is not None}
    if stored and depth != len(stored):
        raise CheckpointError(f"{config_file}: num_hidden_layers is {str(depth)[:20]}, but the "
                              f"weights hold {len(stored)} layers")
    try:
        return ASTConfig.from_dict(dict(
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
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
        ))
    except (TypeError, ValueError, ArithmeticError) as error:
        raise CheckpointError(f"{config_file}: {error}") from None


def _hf_labels(id2label: Any, num_classes: int) -> list[str]:
    """Label names ordered by class id; [] when they do not cover exactly the classes."""
    if not isinstance(id2label, dict) or len(id2label) != num_classes:
        return []
    try:
        by_id = {int(key): str(name) for key, name in id2label.items()}
    except ValueError:
        return []
    return [by_id[i] for i in range(num_classes)] if set(by_id) == set(range(num_classes)) else []


def _hf_loss(hf_config: dict[str, Any]) -> dict[str, str]:
    """The loss `problem_type` stands for (`{"loss": "ce"}`: single-label, scored with softmax);
    nothing when config.json does not say (transformers' AST models are multi-label)."""
    losses = {problem: loss for loss, problem in HF_PROBLEM_TYPES.items()}
    loss = losses.get(hf_config.get("problem_type"))
    return {"loss": loss} if loss else {}


def _hf_normalization(folder: Path) -> dict[str, Any]:
    """Feature normalization of `preprocessor_config.json` (mean, std), when the folder has one."""
    preprocessor_file = folder / "preprocessor_config.json"
    if not preprocessor_file.is_file():
        return {}
    values = read_json(preprocessor_file)
    return {key: values[key] for key in ("mean", "std") if key in values}


def is_hf_name(name: str) -> bool:
    """Whether a tensor name is a Hugging Face AST name (a state dict saved without its folder)."""
    return name.startswith((HF_PREFIX, "embeddings."))
