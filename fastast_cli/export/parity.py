"""Real clips for the parity check of an export: what evaluation would feed the model."""

from __future__ import annotations

import torch
from torch import nn

from fastast_cli.data.dataset import NativeLengthDataset
from fastast_cli.data.features import LengthPolicy
from fastast_cli.data.manifest import Manifest
from fastast_cli.errors import FastASTError
from fastast_cli.export.onnx_export import PARITY_BATCH
from fastast_cli.models.inputs import resolved_input


def dataset_features(model: nn.Module, manifest: Manifest, count: int = PARITY_BATCH, *,
                     frames: int | None = None, resolution: float = 1.0) -> torch.Tensor:
    """Normalized fbank [count, frames, bins] of the first clips of the manifest's evaluation
    split, prepared for `model` as evaluation prepares them (an ElasticAST's at the export's
    `frames` and resolution q, padded or cut to that length as the graph reads them)."""
    spec = resolved_input(model, lambda: manifest.norm_stats(None))  # as evaluation reads it
    if spec.num_mel_bins != manifest.num_mel_bins:
        raise FastASTError(f"{manifest.path} has no clips of the model's input shape to check "
                           "the export with")
    length = frames or spec.target_length
    dataset = NativeLengthDataset(manifest.datafile(manifest.eval_split), manifest.labels_csv,
                                  target_length=length, mean=spec.mean, std=spec.std,
                                  num_mel_bins=spec.num_mel_bins,
                                  resolutions=(resolution, resolution),
                                  length=LengthPolicy.fixed(length))
    if len(dataset) == 0:
        raise FastASTError(f"{manifest.path} has no evaluation clips to check the export with")
    return torch.stack([dataset[index][0] for index in range(min(count, len(dataset)))])
