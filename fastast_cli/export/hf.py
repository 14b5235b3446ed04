"""A Hugging Face `ASTForAudioClassification` folder from a fixed-length fastast AST.

The folder holds what `from_pretrained` reads: `config.json` (architecture, id2label/label2id,
and `problem_type` from the training loss: single-label for cross-entropy, so the folder is
scored with softmax as the checkpoint is; multi-label for BCE),
`model.safetensors` (transformers 4.x names, the inverse of the mapping used to load HF folders)
and `preprocessor_config.json` (ASTFeatureExtractor with the model's input mean and std).
transformers is not needed to write it. Token merging has no counterpart in transformers: the
folder is the plain AST (r = 0).

An ElasticAST is written at one chosen length (`frames`, q = 1: transformers' feature extractor
reads frames every 10 ms) as the fixed AST it is on clips of that length: its factorized
positions summed into AST's 2-D table, its (CLS + DIST) / 2 pooling being AST's own. The folder
is written only when that AST's logits equal the ElasticAST's (checked on random clips).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from fastast_cli.atomic import atomic_folder, atomic_path
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.errors import FastASTError
from fastast_cli.export.one_length import at_one_length, largest_gap
from fastast_cli.inference.clips import input_spec
from fastast_cli.inference.scores import label_names, num_classes_of
from fastast_cli.models.ast import AST
from fastast_cli.models.checkpoints import HF_MODEL_TYPE, to_hf_state_dict
from fastast_cli.models.checkpoints.huggingface import HF_PROBLEM_TYPES
from fastast_cli.models.reduction.settings import merging_as

PathLike = str | os.PathLike[str]
HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


EXACT_TOLERANCE = 1e-4  # largest |logit| gap of an ElasticAST's fixed AST (float rounding)


def export_hf(model: nn.Module, folder: PathLike, frames: int | None = None,
              resolution: float = 1.0) -> list[Path]:
    """Write `model` (a fixed-length AST, or an ElasticAST at `frames` frames) as a
    transformers folder; returns the files written.

    Refuses CNN models (with what cannot be expressed), an ElasticAST at a resolution other
    than q = 1 or whose fixed AST is not exact (naming ONNX instead), and folders that already
    hold files.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FastASTError(f"{folder} already exists and is not an empty folder: pick a new --out")
    ast = _exportable(model, frames, resolution)
    weights = {name: t.detach().cpu().contiguous() for name, t in ast.state_dict().items()}
    with atomic_folder(folder) as building:
        _write_json(building / HF_FILES[0], hf_config(ast))
        with atomic_path(building / HF_FILES[1]) as temporary:
            safetensors.torch.save_file(to_hf_state_dict(weights), str(temporary),
                                        metadata={"format": "pt"})
        _write_json(building / HF_FILES[2], feature_extractor_config(ast))
    return [folder / name for name in HF_FILES]


def _exportable(model: nn.Module, frames: int | None, resolution: float) -> AST:
    """The AST the folder holds: `model`, or an ElasticAST's exact fixed AST at `frames`."""
    if getattr(model, "merges_tokens", False) and model.input_spec().native_length:
        if resolution != 1.0:
            raise FastASTError(
                f"transformers' AST feature extractor reads frames every 10 ms, not at q = "
                f"{resolution:g}: export this ElasticAST with --format onnx --resolution "
                f"{resolution:g}")
        with merging_as(model, model.merging.overridden(r=0)):  # as written: r = 0
            fixed = at_one_length(model, frames, resolution)
            gap = largest_gap(model, fixed)
        if not gap <= EXACT_TOLERANCE:
            raise FastASTError(
                f"this ElasticAST at {frames} frames is not exactly a transformers AST (logits "
                f"differ by {gap:.1e}): export it with --format onnx --frames {frames}")
        return fixed
    if frames is not None or resolution != 1.0:
        at_one_length(model, frames, resolution)  # refuses what only an ElasticAST takes
    if model.architecture != "ast":
        raise FastASTError(
            f"only AST checkpoints can be written as a transformers AST; this is a "
            f"{type(model).__name__} (export it with --format onnx)"
        )
    if model.config.num_classes < 1:
        raise FastASTError("the checkpoint has no classification head to export")
    return model


def head_eps_note(model: nn.Module) -> str | None:
    """What the folder cannot hold of `model`'s head: transformers gives the head's LayerNorm
    the backbone's eps, while original AST files (and students fine-tuned from them) use 1e-5
    there. None when the two agree."""
    config = getattr(model, "config", None)
    head_eps = getattr(config, "head_layer_norm_eps", None)
    if head_eps is None or head_eps == config.layer_norm_eps:
        return None
    return (f"the head's LayerNorm eps ({head_eps:g}) differs from the backbone's "
            f"({config.layer_norm_eps:g}); transformers uses one eps for both, so its logits "
            "may differ slightly from fastast's")


def hf_config(model: AST) -> dict[str, Any]:
    """transformers ASTConfig fields (config.json) of `model`, labels included."""
    config = model.config
    labels = label_names(model, num_classes_of(model))
    return {
        "architectures": ["ASTForAudioClassification"],
        "model_type": HF_MODEL_TYPE,
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": round(config.embed_dim * config.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps,
        "patch_size": config.patch_size,
        "qkv_bias": config.qkv_bias,
        "frequency_stride": config.fstride,
        "time_stride": config.tstride,
        "max_length": config.target_length,
        "num_mel_bins": config.num_mel_bins,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        **problem_type(model),
    }


def problem_type(model: AST) -> dict[str, str]:
    """`problem_type` of config.json for the loss `model` was trained with (none recorded:
    none written, and transformers' default applies)."""
    loss = str((getattr(model, "meta", {}) or {}).get("loss", "")).lower()
    return {"problem_type": HF_PROBLEM_TYPES[loss]} if loss in HF_PROBLEM_TYPES else {}


def feature_extractor_config(model: AST) -> dict[str, Any]:
    """ASTFeatureExtractor settings (preprocessor_config.json): AST's Kaldi fbank and the
    model's normalization, `(fbank - mean) / (2·std)` as here."""
    spec = input_spec(model)
    return {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "sampling_rate": SAMPLE_RATE,
        "num_mel_bins": spec.num_mel_bins,
        "max_length": spec.target_length,
        "padding_value": 0.0,
        "do_normalize": True,
        "mean": spec.mean,
        "std": spec.std,
        "return_attention_mask": False,
    }


def _write_json(path: Path, values: dict[str, Any]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
