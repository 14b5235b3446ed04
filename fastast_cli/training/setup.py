"""What a run is built from: its datasets, its model and the meta its checkpoints carry.

The model says what input it takes (`merges_tokens`, `input_spec()`); nothing here checks its
class.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastast_cli.data.dataset import ASTDataset, NativeLengthDataset
from fastast_cli.data.manifest import Manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.classifiers import build_classifier
from fastast_cli.models.reduction.settings import MergeSettings, capped_note
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.provenance import data_record

VALIDATION_METRICS = ("accuracy", "mAP", "mAUC", "d_prime")


def run_dataset(config: TrainConfig, manifest: Manifest, split: str, training: bool,
                mean: float, std: float) -> ASTDataset:
    """The clips of `split`: augmented (with mixup's partner and λ, for cached teacher logits)
    when `training`; native-length clips at the run's resolutions for an elastic run."""
    options: dict[str, Any] = {"training": training}
    if training:
        options.update(freqm=config.freqm, timem=config.timem, mixup=config.mixup,
                       noise=config.noise, return_mix=True)
    if config.cache:
        options["cache_dir"] = feature_cache_dir(config)
    if config.elastic:
        low, high = config.resolutions
        return NativeLengthDataset(
            manifest.datafile(split, config.fold), manifest.labels_csv,
            target_length=manifest.target_length, mean=mean, std=std,
            num_mel_bins=manifest.num_mel_bins,
            resolutions=(low, high) if training else (1.0, 1.0),
            discrete=config.resolution_sampling == "discrete", **options,
        )
    return manifest.dataset_for(split, config.fold, (mean, std), **options)


CACHE_ENV = "FASTAST_CACHE_DIR"


def feature_cache_dir(config: TrainConfig) -> Path | None:
    """Where the run's fbank cache lives: `cache_dir` (the recipe key or --cache-dir), else
    $FASTAST_CACHE_DIR/features (one cache shared by runs), else `cache/` in the run folder;
    None without a cache. Entries are keyed by the clip's path, size, time and the feature
    settings, so runs on any data may share one folder."""
    if not config.cache:
        return None
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "features"
    return Path(config.out or "run") / "cache"


def run_model(config: TrainConfig, manifest: Manifest, note: Callable[[str], None]) -> nn.Module:
    """The model to train, merging tokens as the recipe says (a note when r asks for more than
    a fixed input's tokens allow); a native-length model gets its token dropout and must hold
    the dataset's longest clip in --max-tokens."""
    model = build_classifier(
        config.model, manifest.label_names, target_length=manifest.target_length,
        num_mel_bins=manifest.num_mel_bins, size=config.size, depth=config.depth,
        fstride=config.fstride, tstride=config.tstride, pooling=config.pooling,
        pretrained=config.pretrained, elastic=config.elastic, max_tokens=config.max_tokens,
        elastic_choices=config.elastic_choices(),
    )
    if not model.merges_tokens:
        return model
    MergeSettings(config.r, config.schedule, config.proportional_attention,
                  method=config.method).apply(model)
    capped = capped_note(model)
    if capped:
        note(capped)
    if not model.input_spec().native_length:
        return model
    model.token_dropout = config.token_dropout
    longest = model.num_tokens(torch.zeros(manifest.target_length, manifest.num_mel_bins))
    if longest > config.max_tokens:
        raise FastASTError(
            f"--max-tokens {config.max_tokens} cannot hold the longest clip "
            f"({manifest.target_length} frames = {longest} tokens): raise it"
        )
    return model


def model_meta(config: TrainConfig, manifest: Manifest, mean: float, std: float,
               row: dict[str, float] | None = None) -> dict[str, Any]:
    """What evaluate/sweep/predict need besides the weights; with an epoch's log `row`, that
    epoch and its validation metrics."""
    meta: dict[str, Any] = {
        "mean": mean, "std": std, "norm_stats": config.norm_stats,
        "target_length": manifest.target_length,
        "num_mel_bins": manifest.num_mel_bins,  # a CNN's input_spec() reads both
        "dataset": manifest.dataset, "r": config.r, "schedule": config.schedule,
        "loss": config.loss, "metric": config.metric, **data_record(manifest, config.fold),
        "merging": MergeSettings(config.r, config.schedule, config.proportional_attention,
                                 method=config.method).to_meta(),
    }
    if row is not None:
        meta["epoch"] = int(row["epoch"])
        meta["validation"] = {key: float(row[key]) for key in VALIDATION_METRICS}
    return meta
