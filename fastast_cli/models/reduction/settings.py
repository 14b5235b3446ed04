"""How a model merges tokens: one record (`MergeSettings`), carried by the model as
`model.merging`, stored in its checkpoint and applied when it is loaded.

A model that merges tokens (AST, ElasticAST) holds exactly one frozen record, read and written
as a whole: `model.merging = settings` applies it (the per-block schedule and the method
instance are derived from it), `model.merging` is what is in effect, `model.set_r(...)` builds
and assigns one. Code that runs a model with other settings for a while swaps the record
(`merging_as`) or runs a view of the model with its own record (`MergingView`) instead of
copying modules or attributes.

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

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fastast_cli.models.reduction import DEFAULT_METHOD, display_name
from fastast_cli.models.reduction.schedule import RSchedule, capped_merging_note

META_KEY = "merging"


@dataclass(frozen=True)
class MergeSettings:
    """Token reduction of a model: `r` (int, per-block list, or an ElasticAST fraction), the
    schedule, proportional attention, the method (`models.reduction.METHODS`) with its options
    (None: the method's defaults), and where these values came from (for tables)."""

    r: RSchedule | float = 0
    schedule: str = "constant"
    proportional_attention: bool = True
    source: str = "default"  # "checkpoint", "default" (nothing stored), "flags" (overridden)
    method: str = DEFAULT_METHOD
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
                   str(record.get("method", DEFAULT_METHOD)),
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
        """`model.merging = self` on an AST or ElasticAST; returns the model.

        Raises ValueError for a method, option, r or schedule the model cannot take."""
        model.merging = self
        return model


@contextlib.contextmanager
def merging_as(model: nn.Module, settings: MergeSettings) -> Iterator[nn.Module]:
    """`model` merging by `settings` inside the block; its own record is set back afterwards
    (on errors too)."""
    saved = model.merging
    model.merging = settings
    try:
        yield model
    finally:
        model.merging = saved


@dataclass(frozen=True)
class MergingView:
    """A model seen with another merging record than its own (e.g. a sweep's method): the same
    modules and weights, nothing copied, the model's own record untouched. Calling the view,
    or reading an attribute through it, happens with `merging` swapped in (`merging_as`):
    `view.reduction_method`, `view.r_schedule` are the view's, `view.blocks is model.blocks`.
    Code that hands the model to others (backends, export) unpacks it with
    `model_and_merging` and swaps the record itself."""

    model: nn.Module
    merging: MergeSettings

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with merging_as(self.model, self.merging):
            return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "merging") or name.startswith("__"):
            raise AttributeError(name)
        with merging_as(self.model, self.merging):
            return getattr(self.model, name)


def model_and_merging(entry: nn.Module | MergingView) -> tuple[nn.Module, MergeSettings]:
    """The model to run and the record to run it with: a view's, or a model's own."""
    if isinstance(entry, MergingView):
        return entry.model, entry.merging
    return entry, entry.merging


def merging_of(model: nn.Module) -> MergeSettings | None:
    """The record of a model that merges tokens; None for one that does not (CNN, PaSST)."""
    return model.merging if getattr(model, "merges_tokens", False) else None


def merges_fixed_grid(model: nn.Module) -> bool:
    """Whether `model` merges the tokens of a fixed patch grid (AST): its token count, and so
    what a block can merge, is the same for every clip (an ElasticAST's varies per clip)."""
    return bool(model.merges_tokens) and not model.input_spec().native_length


def capped_note(model: nn.Module, r: RSchedule | float | None = None,
                schedule: str | None = None) -> str | None:
    """The note a user gets when `r` asks for more merging than a fixed-grid model's tokens
    allow (`capped_merging_note`); None for other models, r = 0 or merging within the cap.
    `r` and `schedule` default to the model's `merging`."""
    if not merges_fixed_grid(model):
        return None
    settings = model.merging
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
    return {"method": DEFAULT_METHOD, "r": meta["r"],
            "schedule": meta.get("schedule") or "constant", "proportional_attention": proportional}
