"""How a model merges tokens, as stored in its checkpoint and applied when it is loaded.

Training records its token-reduction settings in the checkpoint's metadata under `merging`
(method, its options, r, schedule, proportional attention), so that evaluate, predict, sweep and
visualize run the model as it was trained unless a flag says otherwise. fastast checkpoints saved
before that record existed hold their training r and schedule at the top of their meta (and
proportional attention in `train_config`); those are used. Files without any (original AST and
Hugging Face files) load with no merging and proportional attention on, as ToMe applies it to
models used off the shelf. Records without a method (written before there were several) mean
`tome`.

Proportional attention (ToMe, Bolya et al. 2023, §3 "Proportional attention", Eq. 1) adds
log(size) to the attention logits of merged keys. ToMe's authors turn it off when training with
merging and on for off-the-shelf models; training here defaults to off (`TrainConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fastast_cli.models.reduction.schedule import RSchedule, capped_merging_note

META_KEY = "merging"
METHOD = "tome"  # the default method, and the method of records that name none
DISPLAY_NAMES = {"tome": "ToMe", "pitome": "PiToMe", "evit": "EViT", "tofu": "ToFu",
                 "random": "random"}


def display_name(method: str) -> str:
    """The name a method goes by in tables and titles, e.g. `PiToMe` for `pitome`."""
    return DISPLAY_NAMES.get(method, method)


@dataclass(frozen=True)
class MergeSettings:
    """Token reduction of a model: `r` (int, per-block list, or an ElasticAST fraction), the
    schedule, proportional attention, the method (`models.reduction.METHODS`) with its options
    (None: the method's defaults), and where these values came from (for tables)."""

    r: RSchedule | float = 0
    schedule: str = "constant"
    proportional_attention: bool = True
    source: str = "default"  # "checkpoint", "default" (nothing stored) or "flags"
    method: str = METHOD
    method_options: dict[str, Any] | None = None

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint record (`meta["merging"]`)."""
        r = list(self.r) if isinstance(self.r, list | tuple) else self.r
        record = {"method": self.method, "r": r, "schedule": self.schedule,
                  "proportional_attention": self.proportional_attention}
        if self.method_options:
            record["method_options"] = dict(self.method_options)
        return record

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> MergeSettings:
        """The settings a checkpoint stores; the off-the-shelf defaults when it stores none.

        A model trained without merging (r = 0) never used proportional attention, whatever
        was recorded: merging it later is off-the-shelf use, so the attention is on. A record
        without a method is ToMe's; a method this version does not know is kept, and refused
        when applied.
        """
        record = (meta or {}).get(META_KEY)
        if record is None:
            record = _legacy_record(meta or {})
        if not isinstance(record, dict):
            return cls()
        r = record.get("r", 0)
        merged = any(r) if isinstance(r, list) else bool(r)
        proportional = bool(record.get("proportional_attention", True)) if merged else True
        options = record.get("method_options")
        return cls(r, record.get("schedule", "constant"), proportional, "checkpoint",
                   str(record.get("method", METHOD)),
                   dict(options) if isinstance(options, dict) else None)

    def overridden(
        self,
        r: RSchedule | float | None = None,
        schedule: str | None = None,
        proportional_attention: bool | None = None,
        method: str | None = None,
    ) -> MergeSettings:
        """These settings with every value that is not None replaced (command-line flags).

        Another method than the stored one starts from that method's default options."""
        given = {"r": r, "schedule": schedule, "proportional_attention": proportional_attention,
                 "method": method}
        changes = {key: value for key, value in given.items() if value is not None}
        if method is not None and method != self.method:
            changes["method_options"] = None
        return replace(self, **changes, source="flags") if changes else self

    def attention_line(self) -> str:
        """Schedule and proportional attention, e.g. `constant, proportional attention off`."""
        attention = "on" if self.proportional_attention else "off"
        return f"{self.schedule}, proportional attention {attention}"

    def describe(self) -> str:
        """One line for table titles, e.g. `PiToMe r=8 constant, proportional attention off
        (from the checkpoint)`."""
        origin = {"checkpoint": "from the checkpoint", "default": "no merging stored",
                  "flags": "set by flags"}[self.source]
        return f"{display_name(self.method)} r={self.r} {self.attention_line()} ({origin})"

    def apply(self, model: nn.Module) -> nn.Module:
        """Set these settings on an AST or ElasticAST (`set_r`) and remember them on the model.

        Raises ValueError for a method or option the model's engine does not know."""
        model.set_r(self.r, self.schedule, self.proportional_attention, method=self.method,
                    method_options=self.method_options)
        model.merge_settings = self
        return model


def merges_fixed_grid(model: nn.Module) -> bool:
    """Whether `model` merges the tokens of a fixed patch grid (AST): its token count, and so
    what a block can merge, is the same for every clip (an ElasticAST's varies per clip)."""
    return bool(model.merges_tokens) and not model.input_spec().native_length


def capped_note(model: nn.Module, r: RSchedule | float | None = None,
                schedule: str | None = None) -> str | None:
    """The note a user gets when `r` asks for more merging than a fixed-grid model's tokens
    allow (`capped_merging_note`); None for other models, r = 0 or merging within the cap.
    `r` and `schedule` default to the model's `merge_settings` (none: no merging)."""
    if not merges_fixed_grid(model):
        return None
    settings = getattr(model, "merge_settings", None) or MergeSettings()
    r = settings.r if r is None else r
    if not r:
        return None
    return capped_merging_note(model.config.num_patches, model.config.depth, r,
                               schedule or settings.schedule)


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
