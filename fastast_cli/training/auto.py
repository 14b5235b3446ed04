"""Settings a recipe leaves to the run (`auto`), picked from the dataset and the machine.

The shipped `folder` recipe (own recordings prepared by `fastast prepare folder`) sets its
model size, patching, loss, metric, epochs, batch size, learning rate and data-loader workers to
`auto`; any flag replaces an `auto`. The rules are rules of thumb, stated here and printed when a
run starts:

- **Model.** With `--pretrained` AST weights: the size, blocks and patch strides the weights
  have (AST's own fine-tuning shape for AudioSet and ImageNet weights: base, 12 blocks,
  overlapping 16×16 patches every 10 frames and bins, Gong et al. 2021), lr 5e-5, batch 12.
  Without, on a CPU: the demo's tiny AST (4 blocks, non-overlapping patches, lr 2e-4, batch
  8), which trains in minutes on a few hundred clips; on a GPU: a small AST (12 blocks,
  overlapping patches, lr 1e-4, batch 32).
- **Loss and metric.** Cross-entropy and accuracy when every training clip has exactly one
  label (a class-per-folder dataset); binary cross-entropy and mAP when clips have several.
- **Epochs.** Enough passes for the run to see about `CLIPS_SEEN` clips (fine-tuning:
  `CLIPS_SEEN_PRETRAINED`), within [10, 40] from scratch and [5, 25] when fine-tuning.
- **Workers.** Data-loader processes compete with the training threads on a CPU: none with
  two or fewer cores, else up to 4 leaving two cores to training; on a GPU up to 8, one core
  kept.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from fastast_cli.training.config import TrainConfig

CLIPS_SEEN = 8000  # clips a run from scratch sees in all (epochs × training clips)
CLIPS_SEEN_PRETRAINED = 3000
EPOCH_RANGE = (10, 40)
EPOCH_RANGE_PRETRAINED = (5, 25)


@dataclass(frozen=True)
class Machine:
    """What the run trains on: the device's type (`cpu`, `cuda`) and the CPU cores."""

    device_type: str
    cores: int

    @classmethod
    def of(cls, device: torch.device, cores: int | None = None) -> Machine:
        return cls(device.type, cores if cores is not None else (os.cpu_count() or 1))

    @property
    def accelerated(self) -> bool:
        return self.device_type != "cpu"


@dataclass(frozen=True)
class DataShape:
    """What the picks depend on: training clips and whether each has exactly one label."""

    train_clips: int
    single_label: bool

    @classmethod
    def of(cls, labels_per_clip: list[int]) -> DataShape:
        return cls(len(labels_per_clip), all(count == 1 for count in labels_per_clip))


def pretrained_shape(path: str) -> dict[str, Any]:
    """Size, depth and strides of AST weights at `path` (base, 12, 10/10 when the file is not
    AST weights with a known size, e.g. a CNN's)."""
    from fastast_cli.errors import FastASTError
    from fastast_cli.models.ast import SIZES
    from fastast_cli.models.checkpoints import read_weights

    shape = {"size": "base", "depth": 12, "fstride": 10, "tstride": 10}
    try:
        config = read_weights(path).config
    except (FastASTError, OSError, ValueError, KeyError, TypeError):
        return shape
    sizes = {values["embed_dim"]: name for name, values in SIZES.items()}
    embed_dim = getattr(config, "embed_dim", None)
    if embed_dim not in sizes or not hasattr(config, "fstride"):
        return shape
    return {"size": sizes[embed_dim], "depth": config.depth, "fstride": config.fstride,
            "tstride": config.tstride}


def model_shape(pretrained: str | None, machine: Machine) -> dict[str, Any]:
    """Size, depth, patch strides, learning rate and batch size (see the module docstring)."""
    if pretrained is not None:
        return {**pretrained_shape(pretrained), "lr": 5e-5, "batch_size": 12}
    if machine.accelerated:
        return {"size": "small", "depth": 12, "fstride": 10, "tstride": 10, "lr": 1e-4,
                "batch_size": 32}
    return {"size": "tiny", "depth": 4, "fstride": 16, "tstride": 16, "lr": 2e-4,
            "batch_size": 8}


def epochs_for(train_clips: int, pretrained: bool) -> int:
    """Passes over `train_clips` clips for about CLIPS_SEEN clips seen, within the range."""
    seen, (low, high) = ((CLIPS_SEEN_PRETRAINED, EPOCH_RANGE_PRETRAINED) if pretrained
                         else (CLIPS_SEEN, EPOCH_RANGE))
    return int(min(max(math.ceil(seen / max(train_clips, 1)), low), high))


def workers_for(machine: Machine) -> int:
    """Data-loader processes (see the module docstring)."""
    if machine.accelerated:
        return max(0, min(8, machine.cores - 1))
    return max(0, min(4, machine.cores - 2))


def picks(config: TrainConfig, data: DataShape, machine: Machine) -> dict[str, Any]:
    """The value of every setting `config.auto` names."""
    pretrained = config.pretrained is not None
    shape_keys = {"size", "depth", "fstride", "tstride", "lr", "batch_size"}
    shape = (model_shape(config.pretrained if config.model == "ast" else None, machine)
             if shape_keys & set(config.auto) else {})
    chosen: dict[str, Any] = {
        **shape,
        "loss": "ce" if data.single_label else "bce",
        "metric": "accuracy" if data.single_label else "mAP",
        "epochs": epochs_for(data.train_clips, pretrained),
        "num_workers": workers_for(machine),
    }
    return {key: chosen[key] for key in config.auto}


def resolve_auto(config: TrainConfig, data: DataShape, machine: Machine) -> TrainConfig:
    """`config` with its `auto` settings picked (`config.auto` still names them)."""
    if not config.auto:
        return config
    return replace(config, **picks(config, data, machine))


def auto_line(config: TrainConfig, data: DataShape, machine: Machine) -> str:
    """One line saying what `auto` picked and from what, e.g. `auto (cpu, 2 cores, 320
    single-label clips, no --pretrained): size tiny, depth 4, ...`."""
    facts = [machine.device_type, f"{machine.cores} cores",
             f"{data.train_clips} {'single' if data.single_label else 'multi'}-label clips",
             "--pretrained" if config.pretrained else "no --pretrained"]
    values = ", ".join(f"{key} {getattr(config, key)}" for key in config.auto)
    return f"auto ({', '.join(facts)}): {values}; a flag overrides any of them"
