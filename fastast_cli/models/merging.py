"""How a model merges tokens, as stored in its checkpoint and applied when it is loaded.

Training records its token-merging settings in the checkpoint's metadata under `merging`
(method `tome`, r, schedule, proportional attention), so that evaluate, predict, sweep and
visualize run the model as it was trained unless a flag says otherwise. fastast checkpoints saved
before that record existed hold their training r and schedule at the top of their meta (and
proportional attention in `train_config`); those are used. Files without any (original AST and
Hugging Face files) load with no merging and proportional attention on, as ToMe applies it to
models used off the shelf.

Proportional attention (ToMe, Bolya et al. 2023, §3 "Proportional attention", Eq. 1) adds
log(size) to the attention logits of merged keys. ToMe's authors turn it off when training with
merging and on for off-the-shelf models; training here defaults to off (`TrainConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fastast_cli.models.reduction.schedule import RSchedule

META_KEY = "merging"
METHOD = "tome"


@dataclass(frozen=True)
class MergeSettings:
    """Token merging of a model: `r` (int, per-block list, or an ElasticAST fraction), the
    schedule, proportional attention, and where these values came from (for tables)."""

    r: RSchedule | float = 0
    schedule: str = "constant"
    proportional_attention: bool = True
    source: str = "default"  # "checkpoint", "default" (nothing stored) or "flags"

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint record (`meta["merging"]`)."""
        r = list(self.r) if isinstance(self.r, list | tuple) else self.r
        return {"method": METHOD, "r": r, "schedule": self.schedule,
                "proportional_attention": self.proportional_attention}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> MergeSettings:
        """The settings a checkpoint stores; the off-the-shelf defaults when it stores none.

        A model trained without merging (r = 0) never used proportional attention, whatever
        was recorded: merging it later is off-the-shelf use, so the attention is on.
        """
        record = (meta or {}).get(META_KEY)
        if record is None:
            record = _legacy_record(meta or {})
        if not isinstance(record, dict) or record.get("method", METHOD) != METHOD:
            return cls()
        r = record.get("r", 0)
        merged = any(r) if isinstance(r, list) else bool(r)
        proportional = bool(record.get("proportional_attention", True)) if merged else True
        return cls(r, record.get("schedule", "constant"), proportional, "checkpoint")

    def overridden(
        self,
        r: RSchedule | float | None = None,
        schedule: str | None = None,
        proportional_attention: bool | None = None,
    ) -> MergeSettings:
        """These settings with every value that is not None replaced (command-line flags)."""
        given = {"r": r, "schedule": schedule, "proportional_attention": proportional_attention}
        changes = {key: value for key, value in given.items() if value is not None}
        return replace(self, **changes, source="flags") if changes else self

    def attention_line(self) -> str:
        """Schedule and proportional attention, e.g. `constant, proportional attention off`."""
        attention = "on" if self.proportional_attention else "off"
        return f"{self.schedule}, proportional attention {attention}"

    def describe(self) -> str:
        """One line for table titles, e.g. `ToMe r=8 constant, proportional attention off
        (from the checkpoint)`."""
        origin = {"checkpoint": "from the checkpoint", "default": "no merging stored",
                  "flags": "set by flags"}[self.source]
        return f"ToMe r={self.r} {self.attention_line()} ({origin})"

    def apply(self, model: nn.Module) -> nn.Module:
        """Set these settings on an AST or ElasticAST (`set_r`) and remember them on the model."""
        model.set_r(self.r, self.schedule, self.proportional_attention)
        model.merge_settings = self
        return model


def _legacy_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The merging record of a fastast checkpoint saved before `merging` existed: its top-level
    `r` and `schedule`, and proportional attention from its `train_config` (on, the training
    default then, when absent). None for files that never recorded an r (original AST, Hugging
    Face, untrained models)."""
    if meta.get("r") is None:
        return None
    config = meta.get("train_config")
    proportional = config.get("proportional_attention", True) if isinstance(config, dict) else True
    return {"method": METHOD, "r": meta["r"], "schedule": meta.get("schedule") or "constant",
            "proportional_attention": proportional}
