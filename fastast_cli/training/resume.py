"""What `last.pt` holds to continue a run exactly, and reading it back.

`last.pt` is a fastast checkpoint (format, version, architecture, config, model, meta) with the
run's state at its top level: `optimizer`, `scaler`, `progress` and `averaged`. Its `meta` keeps
only what describes the model (stats, dataset, merging, the run's `train_config`). Files written
before this layout keep the state inside `meta`; they are read the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.training.config import LEGACY_ELASTIC, TrainConfig

# Settings that may differ when a run is resumed; any other change is refused.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "num_workers", "out", "data", "cache",
                               "cache_dir", "amp"})
STATE_KEYS = ("optimizer", "scaler", "progress", "averaged")
# Settings added after runs were saved without them: the value those runs used.
SAVED_BEFORE_THEY_EXISTED = {"norm_stats": "measured"}


@dataclass
class Progress:
    """Where the run stands; saved in `last.pt`."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps so far
    best: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    averaged_epochs: int = 0
    epoch_loss: float = 0.0  # loss summed over the epoch's samples so far
    epoch_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-like record (an unset best is None: -inf is not JSON)."""
        record = asdict(self)
        record["best"] = self.best if math.isfinite(self.best) else None
        return record

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        best = saved["best"]
        return cls(
            epoch=saved["epoch"], batch=saved["batch"], step=saved["step"],
            best=best if best is not None else -math.inf, best_epoch=saved["best_epoch"],
            history=list(saved["history"]), averaged_epochs=saved["averaged_epochs"],
            epoch_loss=saved["epoch_loss"], epoch_samples=saved["epoch_samples"],
        )


def run_state(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """`optimizer`, `scaler`, `progress` and `averaged` of a `last.pt` payload: at its top level
    (this layout) or inside its `meta` (files written before). A file without optimizer and
    progress (a best.pt, a bare model) is refused."""
    meta = payload.get("meta") or {}
    state = {key: payload[key] if key in payload else meta.get(key) for key in STATE_KEYS}
    if not isinstance(state["optimizer"], dict) or not isinstance(state["progress"], dict):
        raise FastASTError(f"{path} holds a model but no training state (optimizer, progress): "
                           "--resume continues from the last.pt of an interrupted run")
    return state


def check_resumable(path: Path, saved: dict[str, Any], current: dict[str, Any],
                    warmup_steps: int) -> None:
    """Refuse to resume with settings other than the run's (`saved`: its train_config), except
    those in RESUMABLE_CHANGES. A run saved before warm-up had a default, with the default's
    `warmup_steps`, resumes without --warmup-steps."""
    saved = {**SAVED_BEFORE_THEY_EXISTED, **saved}
    if current.get("warmup_steps") is None and saved.get("warmup_steps") == warmup_steps:
        saved["warmup_steps"] = None
    if saved.get("elastic"):  # an ElasticAST run from before its choices were settings
        saved = {**LEGACY_ELASTIC, **saved}
    changed = [key for key, value in current.items()
               if key not in RESUMABLE_CHANGES and saved.get(key, value) != value]
    if changed:
        flags = " ".join(f"--{key.replace('_', '-')} {saved[key]}" for key in changed
                         if key in LEGACY_ELASTIC)
        raise FastASTError(
            f"{path} was trained with other settings ({', '.join(changed)}); "
            "resume with the same recipe and flags" + (f" ({flags})" if flags else "")
        )


def with_run_choices(config: TrainConfig, out: Path) -> TrainConfig:
    """`config` to resume the run in `out` with: an ElasticAST run from before its choices
    (pooling, position fit, token dropout mode) were settings — its config.yaml lacks them —
    continues with the choices it was trained with (LEGACY_ELASTIC) wherever `config` holds
    the default; a choice given otherwise is left for `check_resumable` to refuse."""
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return config
    if not isinstance(saved, dict) or not saved.get("elastic"):
        return config
    defaults = TrainConfig()
    earlier = {key: value for key, value in LEGACY_ELASTIC.items()
               if key not in saved and getattr(config, key) == getattr(defaults, key)}
    return replace(config, **earlier)


def check_same_data(path: Path, meta: dict[str, Any], data_identity: str, data: str) -> None:
    """Refuse to resume on other data than the run's: its checkpoints would carry the new
    dataset's identity, and the fold-leakage guard (training.provenance) would trust them. The
    same data moved or prepared again has the same identity and resumes."""
    saved = meta.get("data_identity")
    if saved is not None and saved != data_identity:
        raise FastASTError(
            f"{path} was trained on other data ({saved}; {data} is {data_identity}): resume "
            "with the run's own --data, or start a new run in another --out"
        )


def restore_run(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, current: dict[str, Any], warmup_steps: int,
    data_identity: str | None = None,
) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """Load the `last.pt` at `path` into `model`, `optimizer` and `scaler` after checking that
    it was written by a run with the `current` settings (and, given its `data_identity`, on the
    same dataset); returns its progress and averaged weights."""
    payload = read_checkpoint(path)
    meta = payload.get("meta")
    saved = meta.get("train_config") if isinstance(meta, dict) else None
    check_resumable(path, saved if isinstance(saved, dict) else {}, current, warmup_steps)
    if data_identity is not None and isinstance(meta, dict):
        check_same_data(path, meta, data_identity, str(current.get("data")))
    state = run_state(payload, path)
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        progress = Progress.from_dict(state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise FastASTError(f"cannot resume from {path}: its state does not fit this run "
                           f"({str(error).splitlines()[0]})") from None
    return progress, state["averaged"]
